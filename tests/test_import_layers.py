"""Imports go one way (assets → ops → models) and never in a circle, read from the source."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import (
    backward_imports,
    cycles,
    describe,
    forbidden_library_imports,
    import_graph,
    library_imports,
    unit_graph,
)

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_one_way() -> None:
    assert backward_imports(import_graph(ROOT)) == []


def test_ops_has_no_dagster_and_models_only_torch_numpy_and_the_standard_library() -> None:
    libraries = library_imports(ROOT)
    # The reading sees real imports: the layer's own libraries are there.
    assert "torch" in libraries["models.embedding_net"]
    assert "dagster" in libraries["assets.definitions"]
    assert forbidden_library_imports(libraries) == []


def test_the_library_rule_catches_dagster_in_ops_and_pandas_in_models(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "assets/__init__.py": "import dagster as dg\n",
            "ops/__init__.py": "",
            "ops/run.py": "import numpy\ndef later():\n    from dagster_k8s import x\n",
            "ops/pipes.py": "from dagster_pipes import open_dagster_pipes\n",
            "ops/store.py": "import pandas\nfrom . import run\n",
            "models/__init__.py": "",
            "models/net.py": "import torch.nn\nimport numpy as np\nimport math, json\n",
            "models/frame.py": "from pandas import DataFrame\nfrom __future__ import annotations\n",
            "models/fit.py": "import sklearn.linear_model\nfrom .net import x\n",
        },
    )
    assert forbidden_library_imports(library_imports(tmp_path)) == [
        "models.fit imports sklearn",
        "models.frame imports pandas",
        "ops.pipes imports dagster_pipes",
        "ops.run imports dagster_k8s",
    ]


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
