"""The shape the code keeps (issue 17): no import circles, no module over ~500 lines without a reason.

The import direction between packages is import-linter's contract (pyproject.toml, run by make
test); this adds what a layers contract cannot see: circles between modules of one package.
"""

from __future__ import annotations

from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LONG_MODULE_LINES = 500
REASON = "Over 500 lines on purpose"


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("moviegen", "flows", "tasks")
    circles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer, as_packages=False)
    ]
    assert circles == []


def test_long_modules_say_why():
    long = [p for p in (ROOT / "moviegen").rglob("*.py") if len(p.read_text().splitlines()) > LONG_MODULE_LINES]
    assert [str(p.relative_to(ROOT)) for p in long if REASON not in p.read_text()[:2000]] == []
    assert not (ROOT / "moviegen" / "pipeline.py").exists()
