"""Progress of long steps, in the run log (and so in the terminal and the UI)."""

import time
from collections.abc import Callable

import dagster as dg


def progress_logger(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, what: str, every_s: float = 10.0
) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that logs at most every ``every_s`` seconds."""
    started = time.monotonic()
    last = [started]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        remaining = (total - done) / rate if rate > 0 else float("nan")
        context.log.info(f"{what}: {done}/{total} ({rate:.1f}/s, ~{remaining:.0f}s left)")

    return report
