"""Skipped assets: the phrase task on a dataset without phrase annotations.

A skipped asset still materializes (so the dataset's run succeeds and the UI shows why),
with a manifest that carries the reason; each downstream phrase asset passes it on.
"""

from __future__ import annotations

import dagster as dg

SKIPPED = "skipped"


def no_phrases_reason(dataset: str) -> str:
    return f"no phrase annotations in {dataset}"


def skipped_manifest(dataset: str, reason: str) -> dict:
    return {"dataset": dataset, SKIPPED: reason}


def skip_reason(*manifests: dict) -> str | None:
    """The reason an input was skipped, if any was."""
    return next((m[SKIPPED] for m in manifests if m.get(SKIPPED)), None)


def skipped_output(dataset: str, reason: str) -> dg.Output[dict]:
    return dg.Output(skipped_manifest(dataset, reason), metadata={SKIPPED: reason, "rows": 0})


def skipped_check(reason: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=True, description=f"skipped: {reason}", metadata={SKIPPED: reason}
    )
