"""Running selections of the real asset graph in process, on a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.partitions import DATASETS, sync_dataset_partitions
from assets.resources import ComputeSettings, TwobranchStorage
from ops.data.registry import add_dataset, load_registry

TRAINED = [
    "image_sentence_embedding_net",
    "image_sentence_similarity_net",
    "phrase_region_embedding_net",
    "phrase_region_similarity_net",
]
TINY_TRAINING = {"epochs": 3, "batch_images": 20, "hidden_dim": 64, "embed_dim": 32}
SHARDED = ["image_features", "region_proposals", "region_features"]
ALL_KEYS = [key.to_user_string() for asset in ALL_ASSETS for key in asset.keys]

# Everything the graph and the training assets read, in dependency order.
FEATURE_ASSETS = [
    "raw_dataset",
    "images",
    "captions",
    "phrases",
    "image_features",
    "region_proposals",
    "region_features",
    "word_vectors",
    "text_features",
    "phrase_features",
]

SMALL_SYNTHETIC = {
    "synthetic_train_images": 60,
    "synthetic_val_images": 12,
    "synthetic_test_images": 12,
    "synthetic_image_size": 64,
}


def register_custom(data_root: Path, folder: Path, name: str = "custom") -> str:
    """Register ``folder`` as a custom dataset (once) and return its name."""
    if name not in load_registry(data_root):
        add_dataset(data_root, name, "custom", folder)
    return name


def materialize(
    selection: list[str],
    data_root: Path,
    op_config: dict[str, dict] | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    dataset: str = "synthetic",
) -> dg.ExecuteInJobResult:
    """Materialize the named assets (their checks run too) of the real definitions for one
    registered dataset (the run's partition), with the data root at ``data_root`` and a
    small synthetic dataset unless configured otherwise."""
    ops = {"raw_dataset": {"config": dict(SMALL_SYNTHETIC)}}
    for op, config in (op_config or {}).items():
        ops.setdefault(op, {"config": {}})["config"].update(config)
    instance = instance or dg.DagsterInstance.ephemeral()
    sync_dataset_partitions(
        instance, set(instance.get_dynamic_partitions(DATASETS.name)) | {dataset}
    )
    return dg.materialize(
        assets=[*ALL_ASSETS, *ALL_CHECKS],
        selection=dg.AssetSelection.assets(*selection),
        run_config={"ops": {op: cfg for op, cfg in ops.items() if op in selection}},
        resources={
            "storage": TwobranchStorage(data_root=str(data_root)),
            "compute": ComputeSettings(device="cpu", num_workers=0),
        },
        instance=instance,
        raise_on_error=raise_on_error,
        partition_key=dataset,
    )
