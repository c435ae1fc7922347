"""The stage library's layering: no Airflow, and no package imports a stage after its own.

Packages in the order the data flows: ``core`` < ``data`` < ``training`` < ``gates`` <
``serving`` < ``monitoring`` < ``apps``. A module may import ``flightdeck.<package>`` only
for its own package or one before it; imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "include" / "flightdeck"
ORDER = ("core", "data", "training", "gates", "serving", "monitoring", "apps")
TOP_LEVEL = {"__init__.py", "model.py"}  # model.py: the pickled-path shim of FlightDeckClassifier
MODULES = sorted(p for p in LIBRARY.rglob("*.py") if p.parent != LIBRARY)


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``source``, ``from flightdeck import x`` as ``flightdeck.x``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("flightdeck", *(f"flightdeck.{p}" for p in ORDER)):
                out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def layering_violations(package: str, source: str) -> list[str]:
    """What a module of ``package`` imports that it must not: Airflow, or a later stage."""
    bad = []
    for line, name in imports_of(source):
        parts = name.split(".")
        if parts[0] == "airflow":
            bad.append(f"line {line}: imports {name} (the stage library knows no Airflow)")
        elif parts[0] == "flightdeck" and len(parts) > 1 and parts[1] in ORDER:
            if ORDER.index(parts[1]) > ORDER.index(package):
                bad.append(f"line {line}: imports {name} ({parts[1]} comes after {package})")
        elif parts[0] == "flightdeck" and len(parts) > 1 and parts[1] not in ("__version__",):
            bad.append(f"line {line}: imports {name}, outside the stage packages")
    return bad


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(LIBRARY)))
def test_a_module_imports_only_its_own_stage_and_those_before_it(module: Path):
    package = module.relative_to(LIBRARY).parts[0]
    assert package in ORDER, f"{module} is in no stage package"
    assert layering_violations(package, module.read_text()) == []


def test_the_library_has_no_loose_modules():
    assert {p.name for p in LIBRARY.glob("*.py")} == TOP_LEVEL
    assert {p.name for p in LIBRARY.iterdir() if p.is_dir() and not p.name.startswith("__")} == set(ORDER)


@pytest.mark.parametrize(("package", "source", "found"), [
    ("data", "from flightdeck.gates import rubric", "gates comes after data"),
    ("core", "def f():\n    from flightdeck.serving.scoring import load_model\n", "serving comes after core"),
    ("training", "import airflow.sdk", "knows no Airflow"),
    ("gates", "from airflow.sdk import BaseOperator", "knows no Airflow"),
    ("serving", "from flightdeck import runners", "outside the stage packages"),
])
def test_the_check_catches_what_it_should(package: str, source: str, found: str):
    assert any(found in v for v in layering_violations(package, source))


@pytest.mark.parametrize(("package", "source"), [
    ("monitoring", "from flightdeck.serving import scoring\nfrom flightdeck.core import warehouse"),
    ("data", "from flightdeck.data.ingest import parse_rows\nfrom flightdeck import __version__"),
])
def test_the_check_allows_earlier_stages(package: str, source: str):
    assert layering_violations(package, source) == []


# ---------------------------------------------------------------- SQL lives in the stores
# The warehouse package and the prediction store hold every SQL statement; the store lock and
# the MLflow store checks of the registry speak to their own databases.
SQL_HOMES = ("core/warehouse/", "serving/predictions.py", "core/locks.py", "core/registry.py")
SQL_CALLS = ("select", "text", "insert", "update", "delete", "func")


def sql_built_in(source: str) -> list[str]:
    """``sa.<statement>`` builders and ``.execute(`` calls in ``source``, by line."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sa" \
                and node.attr in SQL_CALLS:
            out.append(f"line {node.lineno}: sa.{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr in ("execute", "exec_driver_sql"):
            out.append(f"line {node.lineno}: .{node.attr}(")
    return out


@pytest.mark.parametrize("module", [m for m in MODULES if not str(m.relative_to(LIBRARY)).startswith(SQL_HOMES)],
                         ids=lambda p: str(p.relative_to(LIBRARY)))
def test_sql_is_written_only_in_the_warehouse_and_prediction_store(module: Path):
    assert sql_built_in(module.read_text()) == []


def test_the_sql_check_finds_a_query_built_elsewhere():
    source = "def f(conn, t):\n    return conn.execute(sa.select(t).where(t.c.a == 1))\n"
    assert sorted(sql_built_in(source)) == ["line 2: .execute(", "line 2: sa.select"]
