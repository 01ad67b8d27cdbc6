"""Data-parallel training from a training asset: ``torchrun`` launched through Dagster Pipes,
as a local subprocess (``dg.PipesSubprocessClient``) or, when the deployment runs on Kubernetes,
as a pod with ``nproc_per_node`` GPUs (``dagster_k8s.PipesK8sClient``), with an indexed Job for
the other machines when ``nnodes`` > 1.

Rank 0 streams its epoch lines into the run's log and hands its finished run back as a Pipes
message; a failed rank fails the step with that rank's message, its traceback in the log.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from assets.deployment import on_kubernetes, training_pod_settings
from assets.torchrun_rank import RUN_MESSAGE
from ops.storage.paths import checkpoint_dir
from ops.storage.results_store import publish_catalogue
from ops.storage.run_records import fail_if_running
from ops.training.k8s_specs import (
    first_node_meta,
    rank_pod_spec,
    rendezvous_endpoint,
    rendezvous_service,
    worker_job,
)
from ops.training.launch import TrainingRequest, rank_failures, torchrun_command
from ops.training.run import TrainingRun, training_run_id

# Why a rank that left no error file failed: torchrun kills the others once one dies.
NO_ERROR_FILE = (
    "a rank died without a Python error (killed by a signal or out of memory); torchrun's "
    "own report is in the step's stderr"
)


def train_with_torchrun(context: dg.AssetExecutionContext, request: TrainingRequest) -> TrainingRun:
    """Run ``request`` on ``config.distributed.world_size`` processes and return rank 0's run."""
    root = Path(request.root)
    settings = request.config.distributed
    run_id = training_run_id(
        request.dataset, request.inputs, request.config, request.graph, request.val_max_images
    )
    folder = checkpoint_dir(root, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    launch_dir = Path(tempfile.mkdtemp(prefix="torchrun-", dir=folder))
    request_path = request.write(launch_dir / "request.json")
    log_dir = launch_dir / "logs"
    context.log.info(
        f"training {run_id} with torchrun: {settings.nnodes} machine(s) × "
        f"{settings.nproc_per_node} process(es), backend {settings.backend}"
    )
    try:
        if on_kubernetes():
            invocation = _run_on_kubernetes(context, request_path, log_dir, request)
        else:
            if settings.nnodes > 1:
                raise dg.Failure(
                    f"nnodes={settings.nnodes}: several machines are launched on Kubernetes "
                    "(TWOBRANCH_EXECUTOR=k8s); on one machine set nnodes to 1"
                )
            invocation = dg.PipesSubprocessClient().run(
                context=context, command=torchrun_command(request_path, settings, log_dir)
            )
    except dg.Failure:
        raise
    except Exception as error:  # the Pipes client's error for a failed process or pod
        raise _failure(context, root, run_id, log_dir) from error
    runs = [m["run"] for m in invocation.get_custom_messages() if m.get("kind") == RUN_MESSAGE]
    if not runs or runs[-1] is None:
        raise dg.Failure(f"distributed training of {run_id}: rank 0 ended without its run")
    return TrainingRun.from_payload(runs[-1])


def _failure(
    context: dg.AssetExecutionContext, root: Path, run_id: str, log_dir: Path
) -> dg.Failure:
    failures = rank_failures(log_dir)
    for failure in failures:
        context.log.error(f"{failure.line()}\n{failure.traceback}")
    fail_if_running(root, run_id)
    # Also when rank 0 recorded its failure: torchrun may have stopped it before it published.
    publish_catalogue(root)
    summary = "; ".join(failure.line() for failure in failures) or NO_ERROR_FILE
    return dg.Failure(
        f"distributed training of {run_id} failed: {summary}",
        metadata={"run_id": run_id, "rank_logs": dg.MetadataValue.path(str(log_dir))},
    )


def _run_on_kubernetes(
    context: dg.AssetExecutionContext,
    request_path: Path,
    log_dir: Path,
    request: TrainingRequest,
) -> dg.PipesClientCompletedInvocation:
    from dagster_k8s import PipesK8sClient
    from dagster_k8s.utils import detect_current_namespace

    settings = request.config.distributed
    pod = training_pod_settings(settings.nproc_per_node)
    launch_id = uuid.uuid4().hex[:12]
    namespace = detect_current_namespace(None) or "default"
    endpoint = None
    if settings.nnodes > 1:
        endpoint = rendezvous_endpoint(f"twobranch-rdzv-{launch_id}", namespace)
    command = torchrun_command(
        request_path,
        settings,
        log_dir,
        python="python",
        rendezvous_endpoint=endpoint,
        rendezvous_id=launch_id,
    )
    spec = rank_pod_spec(pod, command)
    with _other_machines(namespace, launch_id, settings.nnodes, spec):
        return PipesK8sClient().run(
            context=context,
            namespace=namespace,
            base_pod_meta=first_node_meta(f"twobranch-train-{launch_id}", launch_id),
            base_pod_spec=spec,
        )


@contextlib.contextmanager
def _other_machines(namespace: str, launch_id: str, nnodes: int, spec: dict) -> Iterator[None]:
    """For several machines: the rendezvous Service and the Job of the machines after the
    first, deleted when the first machine's pod ends."""
    if nnodes == 1:
        yield
        return
    import kubernetes
    from dagster_k8s.client import DagsterKubernetesClient

    client = DagsterKubernetesClient.production_client()
    service = rendezvous_service(f"twobranch-rdzv-{launch_id}", launch_id)
    job = worker_job(f"twobranch-train-{launch_id}-others", launch_id, nnodes, spec)
    client.core_api.create_namespaced_service(namespace, service)
    client.batch_api.create_namespaced_job(namespace, job)
    try:
        yield
    finally:
        with contextlib.suppress(kubernetes.client.ApiException):
            client.batch_api.delete_namespaced_job(
                job["metadata"]["name"], namespace, propagation_policy="Foreground"
            )
        with contextlib.suppress(kubernetes.client.ApiException):
            client.core_api.delete_namespaced_service(service["metadata"]["name"], namespace)
