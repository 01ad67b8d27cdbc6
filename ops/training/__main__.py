"""``python -m ops.training --config cfg.json --bundle data.npz --checkpoint-dir DIR
--result result.json`` — one training run, also under ``torchrun`` (every rank runs this;
rank 0 writes the checkpoints and the result)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops.storage.atomic import write_text_atomic
from ops.training import distributed
from ops.training.config import TrainConfig
from ops.training.data import load_bundle
from ops.training.trainer import EpochRecord, train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.training", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="TrainConfig as JSON")
    parser.add_argument("--bundle", type=Path, required=True, help=".npz from save_bundle")
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True, help="where to write the result")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch line on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = TrainConfig.model_validate(json.loads(args.config.read_text(encoding="utf-8")))
    train_data, val_data = load_bundle(args.bundle)
    # Join torchrun's process group unless the caller already did (then it also leaves it).
    owns_group = distributed.launched_by_torchrun() and not distributed.is_initialized()
    context = distributed.init_distributed(config.device)

    def report(record: EpochRecord) -> None:
        if not args.quiet:
            score = "-" if record.val_score is None else f"{record.val_score:.3f}"
            print(
                f"epoch {record.epoch} loss {record.loss:.5f} val {score} lr {record.lr:.3g} "
                f"{record.seconds:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    try:
        result = train(config, train_data, val_data, args.checkpoint_dir, on_epoch=report)
        if context.is_main:
            payload = result.to_dict()
            payload["world_size"] = context.world_size
            write_text_atomic(args.result, json.dumps(payload, indent=2, sort_keys=True))
    finally:
        if owns_group:
            distributed.shutdown_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
