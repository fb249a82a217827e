"""The layer rules of docs/architecture.md, checked on the imports of every module (no module is executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (folder, modules it may not import, why)
RULES = [
    ("hemorrhage_core/specs", {"torch", "transformers"}, "specs are data: parsed and hashed without torch"),
    ("hemorrhage_core/charts", {"streamlit", "duckdb", "hemorrhage_core.store"}, "charts are pure"),
    ("hemorrhage_core", {"streamlit", "dashboard"}, "the library imports no dashboard glue"),
    ("pages", {"torch"}, "pages read widgets and call the library"),
]


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize(("folder", "banned", "why"), RULES, ids=[r[0] for r in RULES])
def test_layer_rules_hold(folder, banned, why):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, f"{why}: " + "; ".join(offenders)


def test_every_sql_statement_lives_in_the_store():
    sql = ("SELECT ", "INSERT INTO", "CREATE TABLE", "DELETE FROM")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("hemorrhage_core", "dashboard", "pages")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "store.py" and any(s in path.read_text() for s in sql)
    ]
    assert not offenders, offenders
