"""Fingerprints of the files a training run read, so a model is only applied to the inputs it
was trained on.

A feature file is rewritten at the same path when its asset is re-materialized (text features
refitted with a new vocabulary or PCA, a new backbone, a rebuilt graph), so a path names no
particular content. A fingerprint here is the SHA-256 of a Parquet file's footer: its schema,
row count, key-value metadata, and every column chunk's offsets, sizes and statistics. Any
rewrite with other values changes it, while reading it costs one seek whatever the file's
size (region features run to tens of GB). A file that is not Parquet is hashed whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from ops.handoffs import TrainedModel

# The name a run's neighborhood graph file is recorded under, beside its feature files.
GRAPH_INPUT = "neighborhood_graph"
MAGIC = b"PAR1"
TRAILER = 8  # footer length (4 bytes, little-endian) + magic
CHUNK = 1 << 20


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """The fingerprint of one file (see the module docstring); 16 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        footer = b""
        if size >= 2 * TRAILER:
            handle.seek(size - TRAILER)
            trailer = handle.read(TRAILER)
            length = int.from_bytes(trailer[:4], "little")
            if trailer[4:] == MAGIC and length + TRAILER <= size:
                handle.seek(size - TRAILER - length)
                footer = handle.read(length)
        digest.update(size.to_bytes(8, "little"))
        if footer:
            digest.update(footer)
        else:
            handle.seek(0)
            while block := handle.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()[:16]


def input_fingerprints(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, str]:
    """``{input name: fingerprint}`` of a run's input files."""
    return {name: file_fingerprint(path) for name, path in sorted(paths.items())}


def changed_inputs(
    recorded: Mapping[str, str], paths: Mapping[str, str | os.PathLike[str]]
) -> dict[str, str]:
    """``{input name: path}`` of each recorded input whose file now holds something else (or
    is gone). Inputs without a recorded fingerprint are not judged."""
    changed = {}
    for name, fingerprint in recorded.items():
        path = paths.get(name)
        if path is None:
            continue
        if not Path(path).is_file() or file_fingerprint(path) != fingerprint:
            changed[name] = str(path)
    return changed


def run_input_paths(features: Mapping, graph: Mapping | None) -> dict[str, str]:
    """The files a run read, by name: its feature files (the string values of a run's
    ``features``) and its graph's file."""
    paths = {name: value for name, value in features.items() if isinstance(value, str)}
    if graph and graph.get("path"):
        paths[GRAPH_INPUT] = str(graph["path"])
    return paths


class InputsChanged(ValueError):
    """A trained model's input files changed since it was trained: applying it to them would
    score or index it on features it never saw."""

    def __init__(self, run_id: str, changed: Mapping[str, str], what: str) -> None:
        self.run_id = run_id
        self.changed = dict(changed)
        listed = ", ".join(f"{name} ({path})" for name, path in sorted(changed.items()))
        super().__init__(
            f"run {run_id} was trained on inputs that have changed since: {listed}; it is not "
            f"{what} on features it never saw. Retrain (the retrain job) so a model trained on "
            "the current inputs takes its place"
        )


def check_inputs(
    run_id: str, recorded: Mapping[str, str], paths: Mapping[str, str], what: str
) -> None:
    """Raise :class:`InputsChanged` when any of the run's recorded inputs changed."""
    changed = changed_inputs(recorded, paths)
    if changed:
        raise InputsChanged(run_id, changed, what)


def check_trained_inputs(model: TrainedModel, what: str) -> None:
    """Refuse (:class:`InputsChanged`) to use a trained model when the files it was trained
    on have changed since; ``what`` says for what ("evaluated", "indexed")."""
    paths = run_input_paths(model.features, model.graph)
    check_inputs(model.run_id, model.fingerprints, paths, what)
