"""A user's own dataset as most users have it: one folder with a Karpathy-style JSON and its
images, and no phrase annotations."""

from __future__ import annotations

import shutil
from pathlib import Path

from ops.data.synthetic.writer import generate_synthetic


def write_karpathy_folder(
    folder: Path, train: int = 40, val: int = 10, test: int = 10, seed: int = 3
) -> Path:
    """``folder/captions.json`` (5 captions per image, Karpathy schema) and JPEGs beside it;
    no ``Sentences/`` or ``Annotations/``. Scenes come from the synthetic renderer with its
    own seed, so captions describe their images."""
    scratch = folder.parent / f".{folder.name}-scratch"
    generate_synthetic(scratch, seed=seed, n_train=train, n_val=val, n_test=test, image_size=48)
    shutil.move(scratch / "images", folder)
    shutil.move(scratch / "dataset_synthetic.json", folder / "captions.json")
    shutil.rmtree(scratch)
    return folder
