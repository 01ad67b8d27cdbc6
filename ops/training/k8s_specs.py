"""The Kubernetes objects of a data-parallel training run, as plain dicts in the API's
camelCase: the pod the Pipes client starts (torchrun's first machine, holding rank 0), and for
several machines an indexed Job for the others plus a headless Service through which they
reach the first machine's rendezvous."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT = 29400
LAUNCH_LABEL = "twobranch/training-launch"


@dataclass(frozen=True)
class RankPodSettings:
    """Where a training pod runs: its image, its requests, and the shared data volume that
    holds the feature files and receives the checkpoints."""

    image: str
    gpus_per_node: int
    cpu: str = "4"
    memory: str = "16Gi"
    data_claim: str = "twobranch-data"
    data_mount: str = "/data"
    # DataLoader workers and NCCL need more shared memory than a container's default 64 MiB.
    shm_size: str = "8Gi"


def rank_container(settings: RankPodSettings, command: Sequence[str]) -> dict:
    limits = {GPU_RESOURCE: str(settings.gpus_per_node)} if settings.gpus_per_node else {}
    resources: dict = {"requests": {"cpu": settings.cpu, "memory": settings.memory}}
    if limits:
        # Extended resources such as GPUs are requested through limits.
        resources["limits"] = limits
    return {
        "name": "torchrun",
        "image": settings.image,
        "command": list(command),
        "resources": resources,
        "ports": [{"containerPort": RENDEZVOUS_PORT, "name": "rendezvous"}],
        "volumeMounts": [
            {"name": "twobranch-data", "mountPath": settings.data_mount},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }


def rank_pod_spec(settings: RankPodSettings, command: Sequence[str]) -> dict:
    """A pod spec running ``command`` (torchrun) with ``gpus_per_node`` GPUs."""
    return {
        "restartPolicy": "Never",
        "containers": [rank_container(settings, command)],
        "volumes": [
            {"name": "twobranch-data", "persistentVolumeClaim": {"claimName": settings.data_claim}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
        ],
    }


def rendezvous_service(name: str, launch_id: str) -> dict:
    """A headless Service resolving to the first machine's pod (labelled with ``launch_id``),
    published before the pod is ready so the others can wait for it at the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {LAUNCH_LABEL: launch_id}},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LAUNCH_LABEL: launch_id, "twobranch/node": "first"},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


def worker_job(name: str, launch_id: str, nnodes: int, pod_spec: dict) -> dict:
    """An indexed Job of the ``nnodes - 1`` machines after the first; none is retried, since
    torchrun's rendezvous does not take a replacement machine into a running group."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {LAUNCH_LABEL: launch_id}},
        "spec": {
            "completionMode": "Indexed",
            "completions": nnodes - 1,
            "parallelism": nnodes - 1,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {LAUNCH_LABEL: launch_id, "twobranch/node": "other"}},
                "spec": pod_spec,
            },
        },
    }


def first_node_meta(name: str, launch_id: str) -> dict:
    """The Pipes pod's metadata: the label the rendezvous Service selects."""
    return {"name": name, "labels": {LAUNCH_LABEL: launch_id, "twobranch/node": "first"}}


def rendezvous_endpoint(service_name: str, namespace: str) -> str:
    return f"{service_name}.{namespace}.svc.cluster.local:{RENDEZVOUS_PORT}"
