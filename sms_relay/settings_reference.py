"""docs/configuration.md from `Settings`: every environment variable, its type and default."""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import AnyHttpUrl, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from sms_relay.kinds.registry import EVENT_KINDS
from sms_relay.settings import Settings

REGENERATE = "python -m sms_relay.settings_reference > docs/configuration.md"

# Settings' own fields carry no prefix; these groups sort them by their name's first word.
UNPREFIXED_GROUPS = {
    "VERIFY_": "Verify rate limits (`VERIFY_*`)",
    "CALLBACKS_": "Callbacks service (`CALLBACKS_*`)",
}
GENERAL = "Process, HTTP and PostgreSQL"

INTRO = f"""\
# Configuration

<!-- Generated from sms_relay/settings.py, sms_relay/settings_sections.py and the kinds'
     policies (sms_relay/kinds/); do not edit.
     Regenerate with: {REGENERATE} -->

Every process reads its configuration from the environment once at start-up
(pydantic-settings; a `.env` file in the working directory is read too).
[`.env.example`](../.env.example) sets or names each of them with a comment; a test keeps
the two in step. Bad configuration stops start-up with one line per
problem, naming the variable and never its value. `sms-relay kinds` shows the
effective topic and policy of every event kind.
"""


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str
    default: str
    description: str


def variables() -> Iterator[tuple[str, Variable]]:
    """(group heading, variable) for every environment variable `Settings` reads: its own
    fields without a prefix first, then each section, then the prefixed groups of its own."""
    sections: list[type[BaseSettings]] = []
    grouped: dict[str, list[Variable]] = {heading: [] for heading in UNPREFIXED_GROUPS.values()}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            sections.append(annotation)
            continue
        env = name.upper()
        heading = next((h for p, h in UNPREFIXED_GROUPS.items() if env.startswith(p)), None)
        if heading is None:
            yield GENERAL, _variable(env, field)
        else:
            grouped[heading].append(_variable(env, field))
    for model in sections:
        prefix = str(model.model_config.get("env_prefix", ""))
        heading = (model.__doc__ or prefix).strip().splitlines()[0].rstrip(".")
        for name, field in model.model_fields.items():
            yield heading, _variable(prefix + name.upper(), field)
    for heading, rows in grouped.items():
        for row in rows:
            yield heading, row
    for kind in EVENT_KINDS.values():  # each kind's policy: `SMS_<KIND>_<SETTING>`
        prefix = str(kind.policy_type.model_config.get("env_prefix", ""))
        for name, field in kind.policy_type.model_fields.items():
            yield f"Policy of `{kind.name}` (`{prefix}*`)", _variable(prefix + name.upper(), field)


def _variable(env: str, field: FieldInfo) -> Variable:
    if not field.description:
        raise ValueError(f"{env} has no Field(description=...)")
    return Variable(env, _kind(field.annotation), _default(field), field.description)


def _kind(annotation: object) -> str:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        return " or ".join(_kind(arg) for arg in present) + (
            " (optional)" if len(present) < len(args) else ""
        )
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is tuple:
        return "comma-separated list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    names: dict[object, str] = {
        str: "text",
        int: "integer",
        float: "number",
        bool: "`true` \\| `false`",
        SecretStr: "secret text",
        AnyHttpUrl: "URL",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, tuple):
        value = ",".join(str(part) for part in value)
    text = str(value)
    return f"`{text}`" if text else "empty"


def render() -> str:
    """The whole of docs/configuration.md."""
    groups: dict[str, list[Variable]] = {}
    for heading, variable in variables():
        groups.setdefault(heading, []).append(variable)
    parts = [INTRO]
    for heading, rows in groups.items():
        parts.append(f"\n## {heading}\n\n| variable | type | default | description |\n")
        parts.append("|---|---|---|---|\n")
        for row in rows:
            description = row.description.replace("|", "\\|")
            parts.append(f"| `{row.name}` | {row.kind} | {row.default} | {description} |\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
