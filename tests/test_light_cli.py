"""The light commands start without torch or the asset definitions: ``twobranch --help``,
``sql``, ``dataset list|add|remove|sync`` and ``summary`` (which reads the Dagster instance,
not the definitions). Each runs in a fresh interpreter that reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.custom_dataset import write_custom_dataset

HEAVY = ("torch", "torchvision", "assets.definitions")
# Runs the console script's main() and writes its exit code and the heavy modules loaded.
PROBE = """
import json, sys
from assets.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as stop:
    code = stop.code
heavy = [name for name in {heavy!r} if name in sys.modules]
with open(sys.argv[1], "w") as out:
    json.dump({{"code": code, "heavy": heavy}}, out)
"""


def run_probed(args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[dict, str]:
    report = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), str(report), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert report.exists(), done.stderr
    return json.loads(report.read_text()), done.stdout


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import os

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return os.environ | {
        "DAGSTER_HOME": str(home),
        "TWOBRANCH_DATA": str(tmp_path / "data"),
    }


def test_light_commands_load_neither_torch_nor_the_definitions(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    photos = write_custom_dataset(tmp_path / "photos")
    commands = [
        ["--help"],
        ["sql", "--help"],
        ["dataset", "list"],
        ["dataset", "add", "photos", "--source", "custom", "--path", str(photos)],
        ["dataset", "sync"],
        ["sql", "SELECT count(*) AS n FROM training_runs", "--format", "csv"],
        ["summary"],
        ["dataset", "remove", "photos"],
        ["serve", "--help"],
        ["search", "--help"],
    ]
    outputs = {}
    for args in commands:
        probe, out = run_probed(args, tmp_path, cli_env)
        assert probe["heavy"] == [], (args, probe)
        assert probe["code"] == 0, (args, probe)
        outputs[" ".join(args[:2])] = out
    assert "registered photos (custom" in outputs["dataset add"]
    assert outputs["sql SELECT count(*) AS n FROM training_runs"] == "n\n0\n"
    assert "No full_pipeline run yet" in outputs["summary"]
    assert "serve" in outputs["--help"] and "sql" in outputs["--help"]
