"""Skipped assets: the phrase task on a dataset without phrase annotations, and a model whose
input files changed since it was trained (it waits for retraining).

A skipped asset still materializes (so the dataset's run succeeds and the UI shows why),
with a manifest that carries the reason; each downstream phrase asset passes it on.
"""

from __future__ import annotations

import dagster as dg

from ops.storage.input_fingerprints import InputsChanged

SKIPPED = "skipped"


def no_phrases_reason(dataset: str) -> str:
    return f"no phrase annotations in {dataset}"


def skipped_manifest(dataset: str, reason: str) -> dict:
    return {"dataset": dataset, SKIPPED: reason}


def skip_reason(*manifests: dict) -> str | None:
    """The reason an input was skipped, if any was."""
    return next((m[SKIPPED] for m in manifests if m.get(SKIPPED)), None)


def skipped_output(
    dataset: str, reason: str, metadata: dict[str, object] | None = None
) -> dg.Output[dict]:
    return dg.Output(
        skipped_manifest(dataset, reason), metadata={SKIPPED: reason, "rows": 0, **(metadata or {})}
    )


def waiting_for_retraining(
    context: dg.AssetExecutionContext, dataset: str, error: InputsChanged
) -> dg.Output[dict]:
    """A model whose features changed since it was trained is not applied to them: the step
    materializes as skipped, saying why and which files changed, until a model trained on
    the current files is handed to it."""
    context.log.warning(str(error))
    changed = dg.MetadataValue.json(error.changed)
    return skipped_output(dataset, str(error), {"inputs_changed": changed})


def skipped_check(reason: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=True, description=f"skipped: {reason}", metadata={SKIPPED: reason}
    )
