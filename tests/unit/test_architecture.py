"""The PostgreSQL boundary holds: only its adapters speak SQLAlchemy, one owner writes a table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sms_relay.adapters.postgres.tables import metadata

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("sms_relay", "consumer", "callbacks", "cli", "schemas")
ADAPTERS = Path("sms_relay/adapters/postgres")
MIGRATIONS = Path("sms_relay/migrations")
DATABASE_LIBRARIES = frozenset({"sqlalchemy", "psycopg", "psycopg2", "asyncpg"})


def product_modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT) for package in PRODUCT for path in (ROOT / package).rglob("*.py")
    )


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def writes(table: str) -> re.Pattern[str]:
    """The SQL that writes `table`, as the adapters spell it (upper-case keywords)."""
    name = re.escape(table)
    return re.compile(rf"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+{name}\b")


def test_only_the_postgres_adapters_import_a_database_library() -> None:
    offenders = {
        str(path): sorted(imported_packages(path) & DATABASE_LIBRARIES)
        for path in product_modules()
        if not path.is_relative_to(ADAPTERS) and not path.is_relative_to(MIGRATIONS)
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def owner(path: Path) -> str:
    """The module that answers for a file: inside the PostgreSQL adapters, the module or
    package right under them (`deliveries/` is one owner however many files it has)."""
    if path.is_relative_to(ADAPTERS):
        return str(ADAPTERS / path.relative_to(ADAPTERS).parts[0])
    return str(path)


def test_each_table_is_written_by_exactly_one_postgres_adapter() -> None:
    sources = {
        path: (ROOT / path).read_text()
        for path in product_modules()
        if not path.is_relative_to(MIGRATIONS)
    }
    writers = {
        table: sorted({owner(path) for path, text in sources.items() if writes(table).search(text)})
        for table in metadata.tables
    }
    assert len(writers) == 16
    for table, owners in writers.items():
        assert len(owners) == 1, f"{table} is written by {owners or 'no module'}"
        assert Path(owners[0]).is_relative_to(ADAPTERS), f"{table} is written by {owners[0]}"
