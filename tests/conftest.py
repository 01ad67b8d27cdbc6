"""Shared fixtures: the real-format samples and an isolated data root per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


@pytest.fixture
def samples_dir() -> Path:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"real-format samples not found at {SHARED_SAMPLES} (../shared/samples)")
    return SHARED_SAMPLES


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("TWOBRANCH_DATA", str(root))
    return root


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Dagster instance folder as ``DAGSTER_HOME``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def one_thread():
    """One torch thread: tiny tensors run without contention and sum in a fixed order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def synthetic_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The whole asset graph materialized once for the small synthetic dataset (tiny
    networks, sharded feature steps): ``(data root, result, outputs by asset, instance)``.
    Tests read it; none may change it."""
    import dagster as dg

    from tests.pipeline_helpers import ALL_KEYS, SHARDED, TINY_TRAINING, TRAINED, materialize

    root = tmp_path_factory.mktemp("pipeline")
    with dg.instance_for_test() as instance:
        config = {name: TINY_TRAINING for name in TRAINED} | {
            name: {"shards": 3} for name in SHARDED
        }
        result = materialize(ALL_KEYS, root, config, instance)
        keys = ("retrieval_eval", "report", "retrieval_index", *TRAINED)
        outputs = {key: result.output_for_node(key) for key in keys}
        yield root, result, outputs, instance
