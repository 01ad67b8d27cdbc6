"""Feature assets: CNN image and region features, word vectors, sentence and phrase features."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pandas as pd

from assets.deployment import accelerator_step_tags
from assets.handoff_types import dagster_type, typed_handoffs
from assets.metadata import counts_by, feature_preview, preview
from assets.partitions import DATASETS
from assets.progress import progress_logger
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.sharding import (
    merged_features,
    same_config_for_ops,
    shard_outputs,
    shard_result,
    shard_spec,
)
from assets.skips import skipped_output
from ops.data.dataset_store import load_dataset_table
from ops.data.precomp import PRECOMP_VARIANT, write_precomp_image_features
from ops.data.registry import get_dataset
from ops.data.tokenize import tokenize
from ops.features.image_features import extract_image_features, image_variant
from ops.features.settings import ImageFeatureSettings
from ops.features.shards import shard_file
from ops.features.text.encoder_store import encoder_path, save_text_encoders
from ops.features.text.settings import TextFeatureSettings, WordVectorSettings
from ops.features.text.text_features import (
    build_text_features,
    dataset_vocabulary,
    fit_text_encoders,
)
from ops.features.text.word_store import load_word_vectors_file, save_word_vectors
from ops.features.text.word_vectors import load_word_vectors, oov_rate
from ops.handoffs import (
    EncodedTextFile,
    FeatureShard,
    ImageFeatureFile,
    PhraseFeatureFile,
    PublishedTables,
    ShardResult,
    Skipped,
    TextFeatureFile,
    WordVectorFile,
    skip_reason,
)
from ops.storage.paths import features_path

FEATURES_GROUP = "features"


ImageFeatureConfig = dagster_config(ImageFeatureSettings, "ImageFeatureConfig", __name__)


def _precomp_folder(root, dataset: str) -> Path | None:
    """The folder of a dataset registered with precomputed features; None for the others."""
    entry = get_dataset(root, dataset)
    return Path(str(entry.path)) if entry.source == "precomp" else None


def _image_feature_file(root, dataset: str, config: ImageFeatureConfig):
    if _precomp_folder(root, dataset) is not None:
        variant = PRECOMP_VARIANT
    else:
        variant = image_variant(config.backbone, config.ten_crop, config.image_size, config.weights)
    return variant, features_path(root, dataset, "image", variant)


@dg.op(out=dg.DynamicOut(dagster_type(FeatureShard)))
@typed_handoffs
def image_features_plan(
    config: ImageFeatureConfig, images: PublishedTables, storage: TwobranchStorage
) -> Iterator[dg.DynamicOutput]:
    """One shard per contiguous range of the images table."""
    table = load_dataset_table(storage.root, images.dataset, "images")
    yield from shard_outputs(len(table), config.shards, images.dataset)


@dg.op(tags=accelerator_step_tags())
@typed_handoffs
def image_features_shard(
    context: dg.OpExecutionContext,
    config: ImageFeatureConfig,
    shard: FeatureShard,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> ShardResult:
    """CNN features of one shard's images, to that shard's own file."""
    root, dataset = storage.root, shard.dataset
    images = load_dataset_table(root, dataset, "images")
    spec = shard_spec(shard, len(images))
    table = images.iloc[spec.start : spec.stop]
    _, final_path = _image_feature_file(root, dataset, config)
    path = shard_file(final_path, spec, context.run_id)
    precomp = _precomp_folder(root, dataset)
    if precomp is not None:
        context.log.info(f"precomputed image features from {precomp}: no CNN runs")
        copied = write_precomp_image_features(
            precomp,
            table,
            path,
            dataset,
            progress=progress_logger(context, f"precomputed image features {spec.key}"),
        )
        return shard_result(
            shard, path, copied.rows, copied.seconds, dim=copied.dim, pooling=copied.pooling
        )
    stats = extract_image_features(
        table,
        path,
        settings_from(config, ImageFeatureSettings),
        num_workers=compute.workers,
        device=compute.device_name,
        dataset=dataset,
        progress=progress_logger(context, f"image features {spec.key}"),
    )
    return shard_result(shard, path, stats.rows, stats.seconds, dim=stats.dim)


@dg.op
@typed_handoffs
def image_features_merge(
    config: ImageFeatureConfig, shards: list[ShardResult], storage: TwobranchStorage
) -> dg.Output[ImageFeatureFile]:
    """The shards' files joined, in order, into ``features/<dataset>/image_<variant>.parquet``."""
    dataset = shards[0].shard.dataset
    variant, path = _image_feature_file(storage.root, dataset, config)
    precomp = _precomp_folder(storage.root, dataset)
    if precomp is None:
        return merged_features(
            shards,
            path,
            variant,
            ImageFeatureFile,
            config.feature_dtype,
            feature_source=config.backbone,
        )
    return merged_features(
        shards,
        path,
        variant,
        ImageFeatureFile,
        config.feature_dtype,
        feature_source=f"precomputed, from {precomp} (no CNN ran)",
        region_pooling=str(shards[0].pooling),
    )


@dg.config_mapping
def _image_features_config(values: ImageFeatureConfig) -> dict:
    return same_config_for_ops(
        values, "image_features_plan", "image_features_shard", "image_features_merge"
    )


@dg.graph_asset(
    config=_image_features_config,
    group_name=FEATURES_GROUP,
    kinds={"pytorch", "parquet"},
    partitions_def=DATASETS,
)
@typed_handoffs
def image_features(images: PublishedTables) -> ImageFeatureFile:
    """One CNN vector per image (the backbone's penultimate representation), extracted in
    ``shards`` parallel steps and joined into ``features/<dataset>/image_<variant>.parquet``."""
    shards = image_features_plan(images).map(image_features_shard)
    return image_features_merge(shards.collect())


WordVectorConfig = dagster_config(WordVectorSettings, "WordVectorConfig", __name__)


@dg.asset(group_name=FEATURES_GROUP, kinds={"parquet"}, partitions_def=DATASETS)
@typed_handoffs
def word_vectors(
    context: dg.AssetExecutionContext,
    config: WordVectorConfig,
    captions: PublishedTables,
    storage: TwobranchStorage,
) -> dg.Output[WordVectorFile]:
    """Word vectors for the dataset's vocabulary, with out-of-vocabulary rates per split."""
    started = time.perf_counter()
    root, dataset = storage.root, captions.dataset
    caption_rows = load_dataset_table(root, dataset, "captions")
    train_tokens = [tokenize(t) for t in caption_rows.loc[caption_rows["split"] == "train", "text"]]
    wv = load_word_vectors(
        settings_from(config, WordVectorSettings),
        train_sentences=train_tokens if config.source == "word2vec_train" else None,
        vocab_filter=dataset_vocabulary(caption_rows["text"]),
    )
    path = features_path(root, dataset, "words", wv.name)
    save_word_vectors(wv, path)
    oov = {
        split: round(oov_rate([tokenize(t) for t in group["text"]], wv), 4)
        for split, group in caption_rows.groupby("split")
    }
    context.log.info(f"{len(wv)} words, dim {wv.dim}, OOV rate per split {oov}")
    return dg.Output(
        WordVectorFile(dataset=dataset, path=str(path), rows=len(wv), dim=wv.dim, variant=wv.name),
        metadata={
            "rows": len(wv),
            "dim": wv.dim,
            "oov_rate": dg.MetadataValue.json(oov),
            "preview": preview(
                pd.DataFrame({"split": list(oov), "oov_rate": list(oov.values())}), rows=10
            ),
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


TextFeatureConfig = dagster_config(TextFeatureSettings, "TextFeatureConfig", __name__)
T = TypeVar("T", TextFeatureFile, PhraseFeatureFile)
# The file name each kind of text features is stored under.
KIND: dict[type[EncodedTextFile], str] = {TextFeatureFile: "text", PhraseFeatureFile: "phrase"}


def _text_features(
    context: dg.AssetExecutionContext,
    config: TextFeatureConfig,
    rows: pd.DataFrame,
    id_columns: list[str],
    handoff: type[T],
    word_vectors: WordVectorFile,
    root,
    dataset: str,
) -> dg.Output[T]:
    wv = load_word_vectors_file(word_vectors.path)
    train_texts = rows.loc[rows["split"] == "train", "text"].tolist()
    settings = settings_from(config, TextFeatureSettings)
    encoders = fit_text_encoders(train_texts, wv, settings)
    kind = KIND[handoff]
    path = features_path(root, dataset, kind, encoders.variant)
    stats = build_text_features(
        rows,
        id_columns,
        path,
        encoders,
        chunk_rows=settings.chunk_rows,
        progress=progress_logger(context, f"{kind} features"),
    )
    # Saved so that a search query is encoded exactly as these rows were.
    encoder = save_text_encoders(encoders, encoder_path(path))
    return dg.Output(
        handoff(
            dataset=dataset,
            path=str(path),
            rows=stats.rows,
            dim=stats.dim,
            variant=encoders.variant,
            fingerprint=encoders.fingerprint(),
            encoder=str(encoder),
        ),
        metadata={
            "rows": stats.rows,
            "dim": stats.dim,
            "variant": encoders.variant,
            "path": dg.MetadataValue.path(str(path)),
            "fitted_on_train_rows": len(train_texts),
            "encoder_fingerprint": encoders.fingerprint(),
            "encoder": dg.MetadataValue.path(str(encoder)),
            "per_split": counts_by(rows, "split"),
            "preview": feature_preview(str(path)),
            "seconds": round(stats.seconds, 2),
        },
    )


@dg.asset(group_name=FEATURES_GROUP, kinds={"parquet"}, partitions_def=DATASETS)
@typed_handoffs
def text_features(
    context: dg.AssetExecutionContext,
    config: TextFeatureConfig,
    captions: PublishedTables,
    word_vectors: WordVectorFile,
    storage: TwobranchStorage,
) -> dg.Output[TextFeatureFile]:
    """One vector per caption, encoders fitted on training captions only."""
    root, dataset = storage.root, captions.dataset
    rows = load_dataset_table(root, dataset, "captions")
    return _text_features(
        context,
        config,
        rows,
        ["caption_id", "image_id"],
        TextFeatureFile,
        word_vectors,
        root,
        dataset,
    )


@dg.asset(group_name=FEATURES_GROUP, kinds={"parquet"}, partitions_def=DATASETS)
@typed_handoffs
def phrase_features(
    context: dg.AssetExecutionContext,
    config: TextFeatureConfig,
    phrases: PublishedTables | Skipped,
    word_vectors: WordVectorFile,
    storage: TwobranchStorage,
) -> dg.Output[PhraseFeatureFile | Skipped]:
    """One vector per noun phrase, encoders fitted on training phrases only."""
    root, dataset = storage.root, phrases.dataset
    if reason := skip_reason(phrases):
        return skipped_output(dataset, reason)
    rows = load_dataset_table(root, dataset, "phrases")
    return _text_features(
        context,
        config,
        rows,
        ["phrase_id", "caption_id", "image_id"],
        PhraseFeatureFile,
        word_vectors,
        root,
        dataset,
    )
