"""The shared resources read their environment fallbacks when used, not at import."""

from pathlib import Path

import pytest

from assets.resources import ComputeSettings, TwobranchStorage


def test_compute_settings_fall_back_to_the_run_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWOBRANCH_DEVICE", raising=False)
    monkeypatch.delenv("TWOBRANCH_NUM_WORKERS", raising=False)
    settings = ComputeSettings()
    assert (settings.device_name, settings.workers) == ("auto", 2)
    monkeypatch.setenv("TWOBRANCH_DEVICE", "cpu")
    monkeypatch.setenv("TWOBRANCH_NUM_WORKERS", "0")
    assert (settings.device_name, settings.workers) == ("cpu", 0)
    explicit = ComputeSettings(device="cuda:1", num_workers=3)
    assert (explicit.device_name, explicit.workers) == ("cuda:1", 3)
    monkeypatch.setenv("TWOBRANCH_NUM_WORKERS", "two")
    with pytest.raises(ValueError, match="TWOBRANCH_NUM_WORKERS='two'"):
        _ = settings.workers


def test_storage_root_follows_the_environment_at_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    storage = TwobranchStorage()
    monkeypatch.setenv("TWOBRANCH_DATA", str(tmp_path / "first"))
    assert storage.root == (tmp_path / "first").resolve() and storage.root.is_dir()
    monkeypatch.setenv("TWOBRANCH_DATA", str(tmp_path / "second"))
    assert storage.root == (tmp_path / "second").resolve()
    assert TwobranchStorage(data_root=str(tmp_path / "own")).root == (tmp_path / "own").resolve()
