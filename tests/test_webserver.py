"""The Dagster UI's server, for real: asset graph and a launched run through GraphQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import sync_dataset_partitions
from ops.data.registry import add_dataset, load_registry
from tests.hardening.custom_dataset import write_custom_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = {
    "ops": {
        "raw_dataset": {
            "config": {
                "synthetic_train_images": 12,
                "synthetic_val_images": 4,
                "synthetic_test_images": 4,
                "synthetic_image_size": 32,
            }
        }
    }
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def webserver(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # No daemon runs in this test, so runs launch at once instead of waiting in a queue.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator.default_run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    # Two registered datasets, mirrored into the instance as `twobranch dataset sync` does.
    data_root = tmp_path / "data"
    add_dataset(data_root, "mine", "custom", write_custom_dataset(tmp_path / "mine"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        sync_dataset_partitions(instance, load_registry(data_root))
    port = _free_port()
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "TWOBRANCH_DATA": str(tmp_path / "data"),
        "TWOBRANCH_NUM_WORKERS": "0",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-m",
            "assets.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dagster-webserver did not start") from None
                time.sleep(1)
        yield port, data_root
    finally:
        server.send_signal(signal.SIGTERM)  # only the process this test started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_asset_graph_and_a_launched_run_through_graphql(webserver) -> None:
    port, data_root = webserver
    nodes = _graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    groups = {node["assetKey"]["path"][-1]: node["groupName"] for node in nodes}
    assert groups["raw_dataset"] == "data"
    assert groups["image_features"] == "features"
    assert groups["neighborhood_graph"] == "graph"
    assert groups["image_sentence_embedding_net"] == "training"
    assert groups["report"] == "evaluation"

    repositories = _graphql(
        port,
        "{ repositoriesOrError { ... on RepositoryConnection "
        "{ nodes { name location { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    repository = repositories[0]
    for dataset in ("synthetic", "mine"):
        assert _launch_and_wait(port, repository, dataset) == "SUCCESS", dataset
    assert (data_root / "tables" / "synthetic" / "captions.parquet").exists()
    assert (data_root / "tables" / "mine" / "captions.parquet").exists()
    # Both datasets stay materialized, each a partition of the same assets.
    for asset in ("raw_dataset", "captions"):
        node = _graphql(
            port,
            """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
                 ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }""",
            {"key": {"path": [asset]}},
        )["assetNodeOrError"]
        assert node["partitionStats"] == {"numMaterialized": 2, "numPartitions": 2}, asset


def _launch_and_wait(port: int, repository: dict, dataset: str) -> str | None:
    launched = _graphql(
        port,
        """mutation($params: ExecutionParams!) {
             launchRun(executionParams: $params) {
               __typename
               ... on LaunchRunSuccess { run { runId } }
               ... on PythonError { message }
               ... on RunConfigValidationInvalid { errors { message } }
             } }""",
        {
            "params": {
                "selector": {
                    "repositoryLocationName": repository["location"]["name"],
                    "repositoryName": repository["name"],
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [
                        {"path": [name]}
                        for name in ("raw_dataset", "images", "captions", "phrases")
                    ],
                },
                "runConfigData": SMALL_RUN,
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": dataset}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        status = _graphql(
            port,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    return status
