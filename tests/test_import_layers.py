"""Imports go one way (assets → ops → models) and never in a circle, read from the source."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import (
    backward_imports,
    cycles,
    describe,
    import_graph,
    unit_graph,
)

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_one_way() -> None:
    assert backward_imports(import_graph(ROOT)) == []


def test_no_module_import_cycle() -> None:
    assert describe(cycles(import_graph(ROOT))) == []


def test_no_job_package_of_ops_imports_a_package_that_imports_it() -> None:
    units = unit_graph(import_graph(ROOT))
    assert {"ops.data", "ops.features", "ops.training", "ops.storage"} <= set(units)
    assert describe(cycles(units)) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_cycles_and_backward_imports(tmp_path: Path) -> None:
    """A planted tree with each kind of defect: the same checks must report every one."""
    _write(
        tmp_path,
        {
            "assets/__init__.py": "",
            "assets/jobs.py": "from ops.first import run\n",
            "ops/__init__.py": "",
            "ops/first/__init__.py": "from ops.first.work import run\n",
            "ops/first/work.py": "from ops.first import helper\nfrom ops.second import tools\n",
            "ops/first/helper.py": "",
            "ops/second/__init__.py": "",
            "ops/second/tools.py": "def later():\n    from ops.first.helper import x\n",
            "ops/third.py": "import ops.second.tools\n",
            "models/__init__.py": "",
            "models/net.py": "from ops.third import y\nfrom assets import jobs\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["assets.jobs"] == {"ops.first"}
    assert graph["ops.first.work"] == {"ops.first.helper", "ops.second.tools"}
    assert backward_imports(graph) == [
        "models.net imports assets.jobs",
        "models.net imports ops.third",
    ]
    # ``from ops.first import helper`` names a submodule, not the package: no cycle yet.
    assert describe(cycles(graph)) == []
    # A submodule that imports a name from its package's __init__ closes a circle through it.
    _write(tmp_path, {"ops/first/helper.py": "from ops.first import run\n"})
    assert describe(cycles(import_graph(tmp_path))) == [
        "ops.first ↔ ops.first.helper ↔ ops.first.work ↔ ops.second.tools"
    ]
    # ops.first → ops.second (work → tools) and back (tools → helper, in a function body).
    assert describe(cycles(unit_graph(graph))) == ["ops.first ↔ ops.second"]
