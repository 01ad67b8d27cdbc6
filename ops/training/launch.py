"""Data-parallel training launched with ``torchrun``: the request every rank reads, the
command that starts the ranks, one rank's run, and what failed ranks left behind.

Every rank reads the same feature files the single process reads (row files, gathered per
batch), so nothing is copied for the launch: the request names the files, not their rows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.handoffs import NeighborhoodGraphFile
from ops.storage.atomic import write_text_atomic
from ops.training import distributed
from ops.training.config import DistributedSettings, TrainConfig
from ops.training.run import run_training

# The module every rank runs (it speaks Dagster Pipes on rank 0 when launched by Dagster).
RANK_ENTRY = "assets.torchrun_rank"


@dataclass(frozen=True)
class TrainingRequest:
    """One training run's arguments, as every rank reads them from a JSON file."""

    root: str
    dataset: str
    inputs: dict[str, str]
    config: TrainConfig
    graph: NeighborhoodGraphFile
    val_max_images: int = 0

    def to_json(self) -> str:
        values = {
            "root": self.root,
            "dataset": self.dataset,
            "inputs": self.inputs,
            "config": self.config.model_dump(mode="json"),
            "graph": self.graph.model_dump(mode="json"),
            "val_max_images": self.val_max_images,
        }
        return json.dumps(values, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainingRequest:
        values = json.loads(text)
        return cls(
            **values
            | {
                "config": TrainConfig.model_validate(values["config"]),
                "graph": NeighborhoodGraphFile.model_validate(values["graph"]),
            }
        )

    def write(self, path: Path) -> Path:
        write_text_atomic(path, self.to_json())
        return path


def torchrun_command(
    request_path: str | Path,
    settings: DistributedSettings,
    log_dir: str | Path,
    *,
    python: str = sys.executable,
    rendezvous_endpoint: str | None = None,
    rendezvous_id: str = "twobranch",
) -> list[str]:
    """``torchrun`` starting ``settings.nproc_per_node`` ranks of :data:`RANK_ENTRY` on this
    machine. One machine uses a standalone rendezvous on a free port; several machines meet
    at ``rendezvous_endpoint`` (``host:port``, the same on every machine). Each rank's error
    (message and traceback) lands in ``log_dir``, where :func:`rank_failures` finds it."""
    command = [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={settings.nnodes}",
        f"--nproc-per-node={settings.nproc_per_node}",
        f"--log-dir={log_dir}",
    ]
    if settings.nnodes == 1:
        command.append("--standalone")
    else:
        if not rendezvous_endpoint:
            raise ValueError(
                f"nnodes={settings.nnodes}: several machines need a rendezvous endpoint"
            )
        command += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rendezvous_endpoint}",
            f"--rdzv-id={rendezvous_id}",
        ]
    return [*command, "-m", RANK_ENTRY, "--request", str(request_path)]


@dataclass(frozen=True)
class RankFailure:
    """What a failed rank wrote to its torchrun error file."""

    rank: str
    message: str
    traceback: str = field(repr=False)

    def line(self) -> str:
        return f"rank {self.rank}: {self.message}"


def rank_failures(log_dir: str | Path) -> list[RankFailure]:
    """The failures the ranks recorded under ``log_dir`` (torchrun's ``error.json`` per rank,
    written by ranks that raised; a rank killed by a signal writes none), in rank order."""
    failures = []
    for path in sorted(Path(log_dir).glob("**/error.json")):
        try:
            error = json.loads(path.read_text(encoding="utf-8"))["message"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(error, str):  # a message that was not an exception's
            error = {"message": error}
        message = str(error.get("message", "")).strip().splitlines() or ["(no message)"]
        callstack = str(error.get("extraInfo", {}).get("py_callstack", ""))
        failures.append(RankFailure(path.parent.name, message[-1], callstack))
    return failures


def run_rank(
    request: TrainingRequest,
    log: Callable[[str], None] = lambda message: None,
) -> Mapping[str, Any] | None:
    """This rank's share of the run: join the process group, train, leave. Rank 0 records the
    run and returns it (:meth:`TrainingRun.to_payload`); the other ranks return None."""
    config = request.config
    context = distributed.init_distributed(config.device, config.distributed.backend)
    if context.world_size != config.distributed.world_size:
        distributed.shutdown_distributed()
        raise RuntimeError(
            f"started as {context.world_size} process(es) but the settings ask for "
            f"{config.distributed.world_size}: launch with torchrun_command"
        )
    try:
        run = run_training(
            Path(request.root),
            request.dataset,
            request.inputs,
            config,
            request.graph,
            val_max_images=request.val_max_images,
            log=log if context.is_main else (lambda message: None),
        )
    finally:
        distributed.shutdown_distributed()
    return run.to_payload() if context.is_main else None


def rank_of_process() -> int:
    """This process's global rank under torchrun (0 outside it)."""
    return int(os.environ.get("RANK", "0"))
