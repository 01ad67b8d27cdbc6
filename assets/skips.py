"""Skipped assets: the phrase task on a dataset without phrase annotations, and a model whose
input files changed since it was trained (it waits for retraining).

A skipped asset still materializes (so the dataset's run succeeds and the UI shows why),
handing on ``ops.handoffs.Skipped`` with the reason; each downstream phrase asset passes it
on. The UI shows the reason as the ``skipped`` metadata entry.
"""

from __future__ import annotations

import dagster as dg

from ops.handoffs import Skipped
from ops.storage.input_fingerprints import InputsChanged

# The metadata entry (of an asset or a check) that says why it was skipped.
SKIPPED = "skipped"


def no_phrases_reason(dataset: str) -> str:
    return f"no phrase annotations in {dataset}"


def skipped_output(
    dataset: str, reason: str, metadata: dict[str, object] | None = None
) -> dg.Output[Skipped]:
    return dg.Output(
        Skipped(dataset=dataset, reason=reason),
        metadata={SKIPPED: reason, "rows": 0, **(metadata or {})},
    )


def waiting_for_retraining(
    context: dg.AssetExecutionContext, dataset: str, error: InputsChanged
) -> dg.Output[Skipped]:
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
