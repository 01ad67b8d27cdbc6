"""``python -m tests.training_process --config C --checkpoint-dir D --result R``: one training run
of :func:`ops.training.trainer.train` on the retrieval problem of ``tests.training_problems``
(240 training, 40 validation images), in a process of its own that a test can kill."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ops.storage.atomic import write_text_atomic
from ops.training.config import TrainConfig
from ops.training.trainer import train
from tests.training_problems import make_image_sentence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    config = TrainConfig.from_json(args.config.read_text())
    result = train(
        config, make_image_sentence(240, 0), make_image_sentence(40, 1), args.checkpoint_dir
    )
    summary = {
        "config": result.config.model_dump(mode="json"),
        "best_epoch": result.best_epoch,
        "best_val_score": result.best_val_score,
        "epochs": [record.to_dict() for record in result.epochs],
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
    }
    write_text_atomic(args.result, json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
