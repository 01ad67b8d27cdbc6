"""What every torchrun rank of a training asset runs: ``python -m assets.torchrun_rank --request
FILE`` (see :func:`ops.training.launch.torchrun_command`).

When Dagster launched it through Pipes, rank 0 opens the Pipes session: its epoch lines go to
the Dagster run's log and the finished run goes back to the asset as a custom message. The
other ranks (and every rank of a run started by hand) log to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes
from torch.distributed.elastic.multiprocessing.errors import record

from ops.training.launch import TrainingRequest, rank_of_process, run_rank

# The custom message that carries rank 0's finished run to the asset.
RUN_MESSAGE = "training_run"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@record  # torchrun's error file gets this rank's exception and traceback
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.torchrun_rank", description=__doc__)
    parser.add_argument("--request", type=Path, required=True, help="TrainingRequest as JSON")
    args = parser.parse_args(argv)
    request = TrainingRequest.from_json(args.request.read_text(encoding="utf-8"))
    if rank_of_process() == 0 and os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):
        with open_dagster_pipes() as pipes:
            run = run_rank(request, log=pipes.log.info)
            pipes.report_custom_message({"kind": RUN_MESSAGE, "run": run})
    else:
        run_rank(request, log=_to_stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
