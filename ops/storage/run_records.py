"""Training runs in the results store: the run row, its epochs, and champion promotion."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ops.storage.results_store import (
    RESULT_SCHEMAS,
    publish_catalogue,
    read_result,
    to_json,
    utc_now,
    write_result,
)
from ops.storage.validation_scope import ValidationScope


def make_run_id(task: str, network: str, dataset: str, config: Mapping, inputs: Mapping) -> str:
    """Deterministic in (task, network, dataset, config, input files): re-running the same
    training after a crash finds its checkpoints and resumes instead of starting over."""
    digest = hashlib.sha256(to_json({"config": config, "inputs": inputs}).encode()).hexdigest()
    return f"{task}-{network}-{dataset}-{digest[:10]}"


def file_identity(path: str | Path) -> dict[str, object]:
    stat = Path(path).stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_run(
    root: Path,
    run_id: str,
    *,
    task: str,
    network: str,
    dataset: str,
    config: Mapping,
    device: str,
    status: str,
    started_at: pd.Timestamp,
    finished_at: pd.Timestamp | None = None,
    best_epoch: int | None = None,
    best_val_score: float | None = None,
    checkpoint: str | None = None,
    features: Mapping | None = None,
    world_size: int = 1,
    validation_scope: ValidationScope | None = None,
    champion_reason: str | None = None,
) -> None:
    row = {
        "run_id": run_id,
        "task": task,
        "network": network,
        "dataset": dataset,
        "config": to_json(dict(config)),
        "device": device,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "best_epoch": best_epoch,
        "best_val_score": best_val_score,
        "checkpoint": checkpoint,
        "features": to_json(dict(features or {})),
        "world_size": world_size,
        "validation_scope": None if validation_scope is None else validation_scope.to_json(),
        "champion_reason": champion_reason,
    }
    write_result(root, "training_runs", run_id, pd.DataFrame([row]))


def fail_if_running(root: Path, run_id: str) -> bool:
    """Mark ``run_id`` failed if its row still says running: the processes that trained it
    died without recording their end (a killed rank takes rank 0 down with it). True if
    marked."""
    frame = read_result(root, "training_runs", run_id)
    if not len(frame) or frame["status"].iloc[0] != "running":
        return False
    frame = frame.reindex(columns=[f.name for f in RESULT_SCHEMAS["training_runs"]])
    frame.loc[:, "status"] = "failed"
    frame.loc[:, "finished_at"] = utc_now()
    write_result(root, "training_runs", run_id, frame)
    return True


def write_epochs(root: Path, run_id: str, epochs: list[Mapping]) -> None:
    rows = [
        {
            "run_id": run_id,
            "epoch": int(e["epoch"]),
            "loss": float(e["loss"]),
            "loss_terms": to_json(dict(e.get("loss_terms", {}))),
            "val_score": None if e.get("val_score") is None else float(e["val_score"]),
            "val_metrics": to_json(dict(e.get("val_metrics", {}))),
            "lr": float(e["lr"]),
            "seconds": float(e["seconds"]),
        }
        for e in epochs
    ]
    frame = pd.DataFrame(rows, columns=[f.name for f in RESULT_SCHEMAS["epoch_metrics"]])
    write_result(root, "epoch_metrics", run_id, frame)


def champion_key(task: str, network: str, dataset: str) -> str:
    return f"{task}__{network}__{dataset}"


def current_champion(root: Path, task: str, network: str, dataset: str) -> dict | None:
    frame = read_result(root, "champions", champion_key(task, network, dataset))
    return frame.iloc[0].to_dict() if len(frame) else None


def _stale_reason(champion: Mapping, inputs: Mapping[str, str] | None) -> str | None:
    """Why ``champion`` cannot compete on ``inputs``: it was trained on other input files."""
    recorded = decode_json(champion.get("inputs"))
    if not recorded or inputs is None:
        return None  # recorded before fingerprints: nothing to compare
    changed = sorted(name for name in inputs if recorded.get(name) != inputs[name])
    if not changed:
        return None
    listed = ", ".join(changed)
    return f"champion {champion['run_id']} was trained on other inputs ({listed} changed)"


def _unlike_reason(champion: Mapping, scope: ValidationScope | None) -> str | None:
    """Why a score in ``scope`` cannot be compared with ``champion``'s: it was validated on
    other images or by another protocol."""
    recorded = ValidationScope.from_json(champion.get("validation_scope"))
    if recorded is None or scope is None or recorded.alike(scope):
        return None  # alike, or recorded before scopes: nothing to tell them apart by
    return (
        f"validation scope differs: {scope.describe()} against champion {champion['run_id']}'s "
        f"{recorded.describe()}; not compared, champion kept"
    )


def _champion_row(
    task: str,
    network: str,
    dataset: str,
    run_id: str,
    val_score: float,
    previous: Mapping | None,
    reason: str,
    inputs: Mapping[str, str] | None,
    scope: ValidationScope | None,
) -> pd.DataFrame:
    row = {
        "task": task,
        "network": network,
        "dataset": dataset,
        "run_id": run_id,
        "val_score": float(val_score),
        "previous_run_id": None if previous is None else previous["run_id"],
        "previous_val_score": None if previous is None else float(previous["val_score"]),
        "promoted_at": utc_now(),
        "reason": reason,
        "inputs": None if inputs is None else to_json(dict(inputs)),
        "validation_scope": None if scope is None else scope.to_json(),
    }
    return pd.DataFrame([row])


def _still_champion(
    root: Path, champion: Mapping, val_score: float, scope: ValidationScope | None
) -> tuple[bool, str]:
    """The champion trained on (more epochs resume it under the same id): its row takes the
    score the longer run reached."""
    run_id = champion["run_id"]
    reason = f"{run_id} is already the champion (validation {val_score:.3f})"
    if float(champion["val_score"]) != float(val_score):
        frame = pd.DataFrame([dict(champion)]).reindex(
            columns=[f.name for f in RESULT_SCHEMAS["champions"]]
        )
        frame.loc[:, "val_score"] = float(val_score)
        if scope is not None:
            frame.loc[:, "validation_scope"] = scope.to_json()
        key = champion_key(champion["task"], champion["network"], champion["dataset"])
        write_result(root, "champions", key, frame)
        publish_catalogue(root)
        reason += f", up from {float(champion['val_score']):.3f} after further epochs"
    return True, reason


def promote_if_better(
    root: Path,
    run_id: str,
    task: str,
    network: str,
    dataset: str,
    val_score: float | None,
    inputs: Mapping[str, str] | None = None,
    scope: ValidationScope | None = None,
) -> tuple[bool, str]:
    """Make ``run_id`` (trained on files with fingerprints ``inputs``, validated in ``scope``)
    the champion of (task, network, dataset) if its validation score beats the current
    champion's, or if the champion was trained on other inputs: then the run is the only valid
    model for the current ones. Scores validated in unlike scopes are not compared: the
    champion stays. Returns (promoted, the reason in words)."""
    champion = current_champion(root, task, network, dataset)
    if val_score is None:
        return False, "no validation score; not promoted"
    if champion is not None and champion["run_id"] == run_id:
        return _still_champion(root, champion, val_score, scope)
    stale = None if champion is None else _stale_reason(champion, inputs)
    if champion is not None and not stale:
        if unlike := _unlike_reason(champion, scope):
            return False, unlike
        if not val_score > float(champion["val_score"]):
            return False, (
                f"validation {val_score:.3f} does not beat champion {champion['run_id']} "
                f"({float(champion['val_score']):.3f}); champion kept"
            )
    if stale:
        reason = (
            f"{stale}: {run_id} is the only model trained on the current inputs "
            f"(validation {val_score:.3f})"
        )
    elif champion is not None:
        reason = (
            f"validation {val_score:.3f} beats champion {champion['run_id']} "
            f"({float(champion['val_score']):.3f})"
        )
    else:
        reason = f"first model for {task}/{network}/{dataset} (validation {val_score:.3f})"
    row = _champion_row(task, network, dataset, run_id, val_score, champion, reason, inputs, scope)
    write_result(root, "champions", champion_key(task, network, dataset), row)
    publish_catalogue(root)
    return True, reason


def decode_json(value: str | None) -> dict:
    return json.loads(value) if isinstance(value, str) and value else {}
