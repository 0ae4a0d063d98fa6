"""The docs cannot drift: the configuration reference, .env.example, links and the state diagram."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sms_relay.domain.states import TRANSITIONS, DeliveryState, may_move
from sms_relay.settings_reference import REGENERATE, render, variables
from tests.support import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGES.md", *sorted((ROOT / "docs").glob("*.md"))]

# Read by Settings but deliberately absent from .env.example, each with its reason.
ONLY_IN_SETTINGS = {
    # Removed: Settings reads it only to stop start-up with a line saying what replaces it.
    "CALLBACKS_TRUST_FORWARDED_FOR",
}
# Set or named in .env.example but read by something other than Settings, with the reason.
ONLY_IN_ENV_EXAMPLE: set[str] = set()


def test_the_configuration_reference_is_generated_from_settings() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == render(), f"docs/configuration.md is stale: run `{REGENERATE}`"


def test_env_example_and_settings_name_the_same_variables() -> None:
    read = {variable.name for _, variable in variables()}
    example = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert read - ONLY_IN_SETTINGS - example == set(), "read by Settings, not in .env.example"
    assert example - ONLY_IN_ENV_EXAMPLE - read == set(), "in .env.example, not read by Settings"
    assert read >= ONLY_IN_SETTINGS, "an exception for a variable Settings no longer reads"


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks (links and headings there are not Markdown)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(path.read_text()), re.M):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_link(source: Path, target: str) -> str | None:
    """Why a relative link from `source` points nowhere, or None when it resolves."""
    path, _, anchor = target.partition("#")
    where = (source.parent / path).resolve() if path else source
    if not where.exists():
        return f"{where.relative_to(ROOT) if where.is_relative_to(ROOT) else where} is missing"
    if anchor and (where.suffix != ".md" or anchor not in anchors(where)):
        return f"no heading of {where.name} has the anchor #{anchor}"
    return None


def relative_links(markdown: str) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(markdown))  # inline code is not a link either
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    return [target for target in targets if not re.match(r"^[a-z][a-z+.-]*:", target)]


def test_relative_links_in_the_docs_point_somewhere() -> None:
    broken = [
        f"{source.relative_to(ROOT)}: ({target}): {why}"
        for source in DOCS
        for target in relative_links(source.read_text())
        if (why := broken_link(source, target))
    ]
    assert broken == []


def test_every_page_of_docs_is_in_the_readmes_map() -> None:
    readme = (ROOT / "README.md").read_text()
    unlisted = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert unlisted == []


def test_the_alerts_runbook_links_point_at_a_runbook_entry() -> None:
    rules: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    )
    broken = [
        f"{rule['alert']}: {rule['annotations']['runbook']}: {why}"
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
        if (why := broken_link(ROOT / "rules.yml", rule["annotations"]["runbook"]))
    ]
    assert broken == []


def test_the_state_diagram_is_the_ledgers_transitions() -> None:
    markdown = (ROOT / "docs" / "architecture.md").read_text()
    (diagram,) = re.findall(r"^```mermaid\n(.*?)^```", markdown, re.M | re.S)
    edges = re.findall(r"^\s*(\w+) --> (\w+)(?::\s*(.*))?$", diagram, re.M)
    moves = {(DeliveryState(a), DeliveryState(b)): label for a, b, label in edges}
    drawn = {move for move, label in moves.items() if label != "projection"}
    projection = {move for move, label in moves.items() if label == "projection"}
    ledger = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}
    assert drawn == ledger
    assert all(may_move(a, b) for a, b in projection), "a projection move the ledger refuses"
    assert projection.isdisjoint(ledger)
