"""Where and how runs execute: chosen by environment variables, so one code location serves a
laptop and a Kubernetes cluster unchanged.

- ``TWOBRANCH_EXECUTOR``: ``multiprocess`` (default; Dagster's multiprocess-or-in-process
  executor, picked per run in the run config) or ``k8s`` (``dagster_k8s.k8s_job_executor``:
  every step, and so every feature shard, runs in its own pod).
- ``TWOBRANCH_IO_DIR``: where step outputs (small manifests) are pickled. Steps in separate
  pods must share it, so a cluster points it at the shared data volume; unset, Dagster keeps
  them under ``DAGSTER_HOME``.
- ``TWOBRANCH_STEP_GPUS``: GPUs each CNN-feature and training step requests on Kubernetes
  (``nvidia.com/gpu``; default 1, ``0`` requests none). ``TWOBRANCH_STEP_CPU`` and
  ``TWOBRANCH_STEP_MEMORY`` set those steps' CPU and memory requests. The requests are op
  tags that only the Kubernetes executor reads; other executors ignore them.
- ``TWOBRANCH_RETRAIN_CRON``: when the weekly retraining runs (UTC; default Mondays 03:00).
- ``TWOBRANCH_DATA_CLAIM``: the PersistentVolumeClaim holding the data root, which a
  data-parallel training pod mounts at ``TWOBRANCH_DATA`` (default ``twobranch-data``); the
  pod's image is the step's own (``DAGSTER_CURRENT_IMAGE``) unless ``TWOBRANCH_TRAINING_IMAGE``
  names another.

These shape the definitions themselves (a schedule's cron, the executor, the IO manager), so
they are read once, when the code location loads, by the functions below, which
``assets/definitions.py`` calls. Every other setting is run config, resolved per run.
"""

import os

import dagster as dg

from ops.training.k8s_specs import RankPodSettings

EXECUTORS = ("multiprocess", "k8s")
K8S_CONFIG_TAG = "dagster-k8s/config"
DEFAULT_RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00


def executor_name() -> str:
    """``TWOBRANCH_EXECUTOR``, checked: ``multiprocess`` or ``k8s``."""
    name = os.environ.get("TWOBRANCH_EXECUTOR", "multiprocess").strip() or "multiprocess"
    if name not in EXECUTORS:
        raise ValueError(f"TWOBRANCH_EXECUTOR={name!r}: choose one of {EXECUTORS}")
    return name


def on_kubernetes() -> bool:
    return executor_name() == "k8s"


def retrain_cron_from_env() -> str:
    """The retraining schedule's cron: ``TWOBRANCH_RETRAIN_CRON``, else Mondays 03:00."""
    return os.environ.get("TWOBRANCH_RETRAIN_CRON", "").strip() or DEFAULT_RETRAIN_CRON


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor named by ``TWOBRANCH_EXECUTOR`` (``None``: Dagster's default)."""
    if executor_name() == "multiprocess":
        return None
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as err:
        raise ImportError(
            "TWOBRANCH_EXECUTOR=k8s needs dagster-k8s: pip install -e '.[k8s]'"
        ) from err
    return k8s_job_executor


def io_manager_from_env() -> dict[str, dg.ConfigurableIOManager]:
    """``{"io_manager": ...}`` on ``TWOBRANCH_IO_DIR`` when set, else nothing (the default)."""
    base_dir = os.environ.get("TWOBRANCH_IO_DIR", "").strip()
    return {"io_manager": dg.FilesystemIOManager(base_dir=base_dir)} if base_dir else {}


def training_pod_settings(gpus_per_node: int) -> RankPodSettings:
    """The pod of a data-parallel training run on this deployment's cluster."""
    image = os.environ.get("TWOBRANCH_TRAINING_IMAGE") or os.environ.get("DAGSTER_CURRENT_IMAGE")
    if not image:
        raise ValueError(
            "a training pod needs an image: set TWOBRANCH_TRAINING_IMAGE (step pods started by "
            "dagster-k8s carry DAGSTER_CURRENT_IMAGE)"
        )
    return RankPodSettings(
        image=image,
        gpus_per_node=gpus_per_node,
        cpu=os.environ.get("TWOBRANCH_STEP_CPU", "4"),
        memory=os.environ.get("TWOBRANCH_STEP_MEMORY", "16Gi"),
        data_claim=os.environ.get("TWOBRANCH_DATA_CLAIM", "twobranch-data"),
        data_mount=os.environ.get("TWOBRANCH_DATA", "/data"),
    )


def accelerator_step_tags() -> dict[str, object]:
    """Kubernetes resource requests for steps that run a CNN or train a network."""
    gpus = int(os.environ.get("TWOBRANCH_STEP_GPUS", "1"))
    if gpus < 0:
        raise ValueError(f"TWOBRANCH_STEP_GPUS={gpus}: must be 0 or more")
    requests = {
        "cpu": os.environ.get("TWOBRANCH_STEP_CPU", "4"),
        "memory": os.environ.get("TWOBRANCH_STEP_MEMORY", "16Gi"),
    }
    limits: dict[str, str] = {}
    if gpus:
        # Extended resources such as GPUs are requested through limits.
        limits["nvidia.com/gpu"] = str(gpus)
    resources: dict[str, dict[str, str]] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {K8S_CONFIG_TAG: {"container_config": {"resources": resources}}}
