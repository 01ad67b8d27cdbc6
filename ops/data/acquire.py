"""From a dataset choice to files on disk, and from files on disk to DatasetTables.

``acquire_*`` functions put a dataset's raw files under ``raw/<dataset>/`` (generating,
downloading or pointing at a local copy) and describe them with a :class:`RawDataset`;
:func:`parse_raw_dataset` runs the real-format loaders on it. The default synthetic dataset
takes exactly the same loaders as Flickr30K Entities.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ops.data.custom import custom_dataset_json
from ops.data.flickr30k_entities import load_entities_phrases
from ops.data.image_check import validate_images
from ops.data.karpathy import load_karpathy
from ops.data.settings import DatasetSettings
from ops.data.tables import (
    CAPTIONS_PER_IMAGE,
    REJECT_COLUMNS,
    SPLITS,
    DatasetFormatError,
    DatasetTables,
    empty_frame,
)
from ops.storage.paths import raw_dir


@dataclass(frozen=True)
class RawDataset:
    """Where a dataset's raw files are. Paths are absolute strings (picklable, printable)."""

    dataset: str
    karpathy_json: str
    image_root: str
    entities_root: str | None = None
    declared_images: dict[str, int] | None = None
    min_captions_per_image: int = CAPTIONS_PER_IMAGE
    seconds: float = 0.0
    # A precomputed-feature folder (VSE++ / SCAN layout) instead of a JSON and images.
    precomp_root: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def acquire_synthetic(root: Path, settings: DatasetSettings, dataset: str) -> RawDataset:
    """The synthetic dataset sized by ``settings.synthetic_*``, generated under ``dataset``."""
    from ops.data.synthetic.writer import generate_synthetic

    started = time.perf_counter()
    out_dir = raw_dir(root, dataset)
    n_train = settings.synthetic_train_images
    n_val, n_test = settings.synthetic_val_images, settings.synthetic_test_images
    generate_synthetic(
        out_dir,
        seed=settings.seed,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        image_size=settings.synthetic_image_size,
    )
    return RawDataset(
        dataset=dataset,
        karpathy_json=str(out_dir / "dataset_synthetic.json"),
        image_root=str(out_dir / "images"),
        entities_root=str(out_dir),
        declared_images={"train": n_train, "val": n_val, "test": n_test},
        seconds=time.perf_counter() - started,
    )


def acquire_custom(folder: Path, dataset: str = "custom") -> RawDataset:
    folder = Path(folder).resolve()
    json_path = custom_dataset_json(folder)
    entities = folder if (folder / "Sentences").is_dir() else None
    return RawDataset(
        dataset=dataset,
        karpathy_json=str(json_path),
        image_root=str(folder),
        entities_root=str(entities) if entities else None,
        min_captions_per_image=1,
    )


def acquire_precomp(folder: Path, dataset: str = "precomp") -> RawDataset:
    from ops.data.precomp import precomp_splits

    folder = Path(folder).resolve()
    precomp_splits(folder)
    return RawDataset(
        dataset=dataset,
        karpathy_json="",
        image_root=str(folder),
        precomp_root=str(folder),
    )


def _check_split_sizes(
    source: str,
    listed: pd.DataFrame,
    kept: pd.DataFrame,
    image_rejects: pd.DataFrame,
    min_images_per_split: int,
) -> None:
    """Every split keeps at least ``min_images_per_split`` images once bad images are gone:
    a split emptied by unreadable files must stop the run, not reach training or evaluation."""
    kept_counts = kept["split"].value_counts()
    listed_counts = listed["split"].value_counts()
    split_of = dict(zip(listed["image_id"], listed["split"], strict=True))
    rejected_splits = image_rejects["item_id"].map(split_of)
    problems = []
    for split in SPLITS:
        n_kept = int(kept_counts.get(split, 0))
        if n_kept >= min_images_per_split:
            continue
        n_listed = int(listed_counts.get(split, 0))
        if n_listed == 0:
            problems.append(f"split {split!r} has no images")
            continue
        rejected = image_rejects.loc[rejected_splits == split]
        reasons = rejected["reason"].value_counts()
        # One path per reason shows where the images were looked for (a wrong folder shows).
        example = rejected.groupby("reason", sort=False)["path"].first()
        why = ", ".join(
            f"{reason}: {count}, e.g. {example[reason]}" for reason, count in reasons.items()
        )
        problems.append(
            f"split {split!r} kept {n_kept} images (fewer than {min_images_per_split}); "
            f"{n_listed - n_kept} of its {n_listed} images were rejected"
            + (f" ({why})" if why else "")
        )
    if problems:
        raise DatasetFormatError(
            source,
            "; ".join(problems) + " - training needs train, model selection needs val and "
            "evaluation needs test; see the listed reasons to fix the images",
        )


def parse_raw_dataset(
    raw: RawDataset,
    settings: DatasetSettings,
    max_captions_per_image: int | None = CAPTIONS_PER_IMAGE,
) -> DatasetTables:
    """Load captions (and phrases where present), validate images (``check_images``), drop
    what they orphan; ``restval_to_train`` moves restval images into the training split.

    Each image keeps its first ``max_captions_per_image`` captions (None keeps all), as the
    retrieval protocols count five per image; the others are listed in ``rejects``. Raises
    DatasetFormatError, before anything could be published, when a split keeps fewer than
    ``min_images_per_split`` images after image validation and caption cleaning.
    """
    min_images_per_split = settings.min_images_per_split
    if raw.precomp_root is not None:
        return _parse_precomp(raw, min_images_per_split)
    tables = load_karpathy(
        Path(raw.karpathy_json),
        Path(raw.image_root),
        raw.dataset,
        settings.restval_to_train,
        max_captions_per_image,
    )
    rejects = [tables.rejects]
    images = tables.images
    image_rejects = empty_frame(REJECT_COLUMNS)
    if settings.check_images:
        images, image_rejects = validate_images(images)
        image_rejects = image_rejects.assign(dataset=raw.dataset)
        rejects.append(image_rejects)
    _check_split_sizes(
        raw.karpathy_json, tables.images, images, image_rejects, min_images_per_split
    )
    kept = set(images["image_id"])
    captions = tables.captions[tables.captions["image_id"].isin(kept)].reset_index(drop=True)
    phrases = tables.phrases
    if raw.entities_root:
        phrases = load_entities_phrases(
            Path(raw.entities_root), captions, raw.dataset, max_captions_per_image
        )
    non_empty = [r for r in rejects if len(r)]
    all_rejects = (
        pd.concat(non_empty, ignore_index=True) if non_empty else empty_frame(REJECT_COLUMNS)
    )
    return DatasetTables(
        dataset=raw.dataset,
        images=images,
        captions=captions,
        phrases=phrases,
        rejects=all_rejects,
    ).conformed()


def _parse_precomp(raw: RawDataset, min_images_per_split: int) -> DatasetTables:
    from ops.data.precomp import NON_FINITE_FEATURES, load_precomp

    tables, listed = load_precomp(Path(str(raw.precomp_root)), raw.dataset)
    image_rejects = tables.rejects[tables.rejects["reason"] == NON_FINITE_FEATURES]
    _check_split_sizes(
        str(raw.precomp_root), listed, tables.images, image_rejects, min_images_per_split
    )
    return tables
