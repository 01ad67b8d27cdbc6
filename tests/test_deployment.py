"""The Kubernetes deployment, validated without a cluster: the definitions load with the
Kubernetes executor, the cluster run config and the Helm values pass Dagster's own config
schemas, and a step pod built from them requests a GPU and mounts the shared data volume."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_shared.yaml_utils import load_yaml_from_glob_list

from assets.automation import JOBS, SENSORS, build_retrain_schedule
from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.deployment import accelerator_step_tags, executor_from_env, io_manager_from_env
from assets.features import image_features_shard
from assets.regions import region_features_shard, region_proposals_shard
from assets.resources import ComputeSettings, TwobranchStorage
from assets.training import TRAINING_ASSETS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "k8s"
# The cluster overlay first, then the paper profile it adds to (Dagster's merge order).
CLUSTER_RUN_CONFIGS = [
    REPO / "configs" / "k8s_flickr30k_entities.yaml",
    REPO / "configs" / "paper_flickr30k_entities.yaml",
]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _values() -> dict:
    return _yaml(DEPLOY / "values.yaml")


def _code_location(values: dict) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _run_launcher_config(values: dict) -> dict:
    """The K8sRunLauncher config the chart renders from ``runLauncher.config.k8sRunLauncher``
    (templates/helpers/instance/_run-launcher.tpl), for the keys these values use."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    image = _code_location(values)["image"]
    return {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": "dagster",
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": "dagster",
        "job_image": f"{image['repository']}:{image['tag']}",
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
        "env_vars": launcher["envVars"],
        "volume_mounts": launcher["volumeMounts"],
        "volumes": launcher["volumes"],
    }


def _definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=JOBS,
        schedules=[build_retrain_schedule()],
        sensors=SENSORS,
        resources={"storage": TwobranchStorage(), "compute": ComputeSettings()},
        executor=executor_from_env(),
    )


def test_executor_is_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWOBRANCH_EXECUTOR", raising=False)
    assert executor_from_env() is None
    local = _definitions().resolve_job_def("full_pipeline")
    assert local.executor_def.name == "multi_or_in_process_executor"
    monkeypatch.setenv("TWOBRANCH_EXECUTOR", "k8s")
    assert _definitions().resolve_job_def("full_pipeline").executor_def.name == "k8s"
    monkeypatch.setenv("TWOBRANCH_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="TWOBRANCH_EXECUTOR='celery'"):
        executor_from_env()


def test_code_location_loads_with_the_kubernetes_executor(tmp_path: Path) -> None:
    """``dagster definitions validate`` on the real module, configured as the cluster runs it."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "TWOBRANCH_EXECUTOR": "k8s",
        "TWOBRANCH_IO_DIR": str(tmp_path / "io"),
        "TWOBRANCH_DATA": str(tmp_path / "data"),
    }
    dagster = Path(sys.executable).with_name("dagster")
    completed = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout + completed.stderr
    assert "Validation successful for code location assets.definitions" in output


def test_cluster_run_config_is_valid_for_full_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOBRANCH_EXECUTOR", "k8s")
    job = _definitions().resolve_job_def("full_pipeline")
    run_config = load_yaml_from_glob_list([str(path) for path in CLUSTER_RUN_CONFIGS])
    dg.validate_run_config(job, run_config)  # raises DagsterInvalidConfigError if not
    shards = {
        name: run_config["ops"][name]["config"]["shards"]
        for name in run_config["ops"]
        if "shards" in run_config["ops"][name]["config"]
    }
    assert shards == {"image_features": 8, "region_proposals": 32, "region_features": 8}
    wrong = {**run_config, "ops": {"image_features": {"config": {"shards": 0}}}}
    with pytest.raises(dg.DagsterError, match="image_features") as failure:
        dg.validate_run_config(job, wrong)
    cause = str(failure.value.__cause__)
    assert "shards" in cause and "greater than or equal to 1" in cause


def test_demo_run_config_is_valid_locally_and_not_on_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = _yaml(REPO / "configs" / "synthetic_demo.yaml")
    monkeypatch.delenv("TWOBRANCH_EXECUTOR", raising=False)
    dg.validate_run_config(_definitions().resolve_job_def("full_pipeline"), demo)
    monkeypatch.setenv("TWOBRANCH_EXECUTOR", "k8s")
    with pytest.raises(dg.DagsterInvalidConfigError, match="in_process"):
        dg.validate_run_config(_definitions().resolve_job_def("full_pipeline"), demo)


def test_cnn_and_training_steps_request_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_steps = [image_features_shard, region_features_shard, *(a.op for a in TRAINING_ASSETS)]
    for op in gpu_steps:
        resources = get_user_defined_k8s_config(op.tags).container_config["resources"]
        assert resources["limits"] == {"nvidia.com/gpu": "1"}, op.name
        assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    # Selective search is CPU work: its shards ask for no GPU.
    assert "dagster-k8s/config" not in region_proposals_shard.tags
    monkeypatch.setenv("TWOBRANCH_STEP_GPUS", "0")
    assert (
        "limits"
        not in accelerator_step_tags()["dagster-k8s/config"]["container_config"]["resources"]
    )
    monkeypatch.setenv("TWOBRANCH_STEP_GPUS", "2")
    monkeypatch.setenv("TWOBRANCH_STEP_MEMORY", "60Gi")
    resources = accelerator_step_tags()["dagster-k8s/config"]["container_config"]["resources"]
    assert resources == {
        "requests": {"cpu": "4", "memory": "60Gi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    monkeypatch.setenv("TWOBRANCH_STEP_GPUS", "-1")
    with pytest.raises(ValueError, match="0 or more"):
        accelerator_step_tags()


@pytest.fixture
def chart_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the chart sets on its pods, which the rendered config refers to."""
    monkeypatch.setenv("DAGSTER_HOME", "/opt/dagster/dagster_home")
    monkeypatch.setenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP", "dagster-instance")
    monkeypatch.setenv("DAGSTER_K8S_PG_PASSWORD_SECRET", "dagster-postgresql-secret")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "dagster-pipeline-env")


@pytest.mark.usefixtures("chart_pod_env")
def test_helm_values_render_a_valid_run_launcher() -> None:
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    processed = process_config(K8sRunLauncher.config_type(), _run_launcher_config(values))
    assert processed.success, processed.errors


@pytest.mark.usefixtures("chart_pod_env")
def test_a_gpu_step_pod_mounts_the_shared_volume_and_requests_a_gpu() -> None:
    """The pod the executor would create for an image-feature shard, built by dagster-k8s
    from the run launcher's config and the step's tags."""
    launcher = process_config(K8sRunLauncher.config_type(), _run_launcher_config(_values()))
    config = launcher.value
    job_config = DagsterK8sJobConfig(
        job_image=config["job_image"],
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy=config["image_pull_policy"],
        env_vars=config["env_vars"],
        volume_mounts=config["volume_mounts"],
        volumes=config["volumes"],
    )
    pod = construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-image-features-shard-000",
        user_defined_k8s_config=get_user_defined_k8s_config(image_features_shard.tags),
    )
    container = pod.spec.template.spec.containers[0]
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [
        ("twobranch-data", "/data")
    ]
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.template.spec.volumes]
    assert claims == ["twobranch-data"]
    env = {e.name: e.value for e in container.env}
    assert env["TWOBRANCH_DATA"] == "/data" and env["TWOBRANCH_EXECUTOR"] == "k8s"


def test_every_pod_shares_one_data_volume_and_one_configuration() -> None:
    values = _values()
    location = _code_location(values)
    volume = _yaml(DEPLOY / "data-volume.yaml")
    assert volume["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in volume["spec"]["accessModes"]  # pods on many nodes write it
    claim = volume["metadata"]["name"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for volumes in (location["volumes"], launcher["volumes"]):
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == [claim]
    location_env = {item["name"]: item["value"] for item in location["env"]}
    launcher_env = dict(item.split("=", 1) for item in launcher["envVars"])
    assert launcher_env.items() <= location_env.items()
    (mount,) = location["volumeMounts"]
    assert location_env["TWOBRANCH_DATA"] == mount["mountPath"]
    assert location_env["TWOBRANCH_IO_DIR"].startswith(mount["mountPath"] + "/")
    assert location_env["TWOBRANCH_EXECUTOR"] == "k8s"
    # The chart serves the same module the local workspace loads.
    assert location["dagsterApiGrpcArgs"] == ["--module-name", "assets.definitions"]
    (local,) = _yaml(REPO / "workspace.yaml")["load_from"]
    assert local["python_module"]["module_name"] == "assets.definitions"
    # The chart version named in the install command is the pinned dagster version.
    chart = re.search(r"--version (\S+)", (DEPLOY / "values.yaml").read_text()).group(1)
    assert chart == dg.__version__


def test_dockerfile_copies_what_exists_and_sets_the_cluster_environment() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert sources and all((REPO / source).exists() for source in sources), sources
    assert "pip install --no-cache-dir '.[k8s]'" in dockerfile
    env = dict(re.findall(r"(TWOBRANCH_\w+|TORCH_HOME)=(\S+)", dockerfile))
    location_env = {item["name"]: item["value"] for item in _code_location(_values())["env"]}
    assert {key: location_env[key] for key in env} == env


def test_io_manager_follows_the_shared_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("TWOBRANCH_IO_DIR", raising=False)
    assert io_manager_from_env() == {}
    monkeypatch.setenv("TWOBRANCH_IO_DIR", str(tmp_path))
    manager = io_manager_from_env()["io_manager"]
    assert isinstance(manager, dg.FilesystemIOManager) and manager.base_dir == str(tmp_path)


def _training_pod(nproc_per_node: int, nnodes: int, monkeypatch: pytest.MonkeyPatch):
    """The pod, and for several machines the Job and Service, a data-parallel training step
    submits, rendered as the Pipes client renders its pod and validated by the client's models."""
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from dagster_k8s.pipes import build_pod_body
    from kubernetes import client as k8s

    from assets.deployment import training_pod_settings
    from ops.training.config import DistributedSettings
    from ops.training.k8s_specs import (
        first_node_meta,
        rank_pod_spec,
        rendezvous_endpoint,
        rendezvous_service,
        worker_job,
    )
    from ops.training.launch import torchrun_command

    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "registry.example.com/twobranch:0.1.0")
    monkeypatch.setenv("TWOBRANCH_DATA", "/data")  # as the cluster's values.yaml sets it
    settings = DistributedSettings(nproc_per_node=nproc_per_node, nnodes=nnodes)
    endpoint = rendezvous_endpoint("twobranch-rdzv-abc", "dagster") if nnodes > 1 else None
    command = torchrun_command(
        "/data/checkpoints/run/request.json", settings, "/data/checkpoints/run/logs",
        python="python", rendezvous_endpoint=endpoint, rendezvous_id="abc",
    )  # fmt: skip
    spec = rank_pod_spec(training_pod_settings(nproc_per_node), command)
    pod = build_pod_body(
        "twobranch-train-abc", None, None, {"DAGSTER_PIPES_CONTEXT": "x"},
        first_node_meta("twobranch-train-abc", "abc"), spec,
    )  # fmt: skip
    job = k8s_model_from_dict(
        k8s.V1Job, k8s_snake_case_dict(k8s.V1Job, worker_job("others", "abc", nnodes, spec))
    )
    service = k8s_model_from_dict(
        k8s.V1Service, k8s_snake_case_dict(k8s.V1Service, rendezvous_service("rdzv", "abc"))
    )
    return pod, job, service, command


@pytest.mark.parametrize(("nproc_per_node", "nnodes"), [(4, 1), (8, 3)])
def test_a_distributed_training_pod_requests_one_gpu_per_process(
    monkeypatch: pytest.MonkeyPatch, nproc_per_node: int, nnodes: int
) -> None:
    pod, job, service, command = _training_pod(nproc_per_node, nnodes, monkeypatch)
    (container,) = pod.spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": str(nproc_per_node)}
    assert container.image == "registry.example.com/twobranch:0.1.0"
    assert container.command == command
    assert f"--nproc-per-node={nproc_per_node}" in command and f"--nnodes={nnodes}" in command
    assert command[-4:-2] == ["-m", "assets.torchrun_rank"]
    mounts = {mount.mount_path: mount.name for mount in container.volume_mounts}
    assert mounts["/data"] == "twobranch-data" and "/dev/shm" in mounts
    claims = [
        v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim
    ]
    assert claims == ["twobranch-data"]
    assert pod.spec.restart_policy == "Never"
    # The Service selects the first machine's pod by its labels.
    assert service.spec.selector.items() <= pod.metadata.labels.items()
    assert service.spec.cluster_ip == "None"
    if nnodes == 1:
        assert "--standalone" in command
    else:
        assert "--rdzv-endpoint=twobranch-rdzv-abc.dagster.svc.cluster.local:29400" in command
        assert job.spec.completion_mode == "Indexed"
        assert job.spec.completions == job.spec.parallelism == nnodes - 1
        (worker,) = job.spec.template.spec.containers
        assert worker.resources.limits == {"nvidia.com/gpu": str(nproc_per_node)}
        assert worker.command == command


def test_a_training_pod_needs_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.deployment import training_pod_settings

    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE", raising=False)
    monkeypatch.delenv("TWOBRANCH_TRAINING_IMAGE", raising=False)
    with pytest.raises(ValueError, match="TWOBRANCH_TRAINING_IMAGE"):
        training_pod_settings(1)
