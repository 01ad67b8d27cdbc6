"""Training assets: one per task × network, each a recorded, resumable training run."""

import types
from collections.abc import Mapping

import dagster as dg
import pydantic

from assets.deployment import accelerator_step_tags
from assets.handoff_types import dagster_type, typed_handoffs
from assets.metadata import png_bytes_value
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config
from assets.skips import skipped_output
from assets.torchrun import train_with_torchrun
from ops.handoffs import (
    FeatureFile,
    ImageFeatureFile,
    NeighborhoodGraphFile,
    PhraseFeatureFile,
    RegionFeatureFile,
    RegionProposalFile,
    Skipped,
    TextFeatureFile,
    TrainedModel,
    skip_reason,
)
from ops.training.config import DistributedSettings, Network, Task
from ops.training.launch import TrainingRequest
from ops.training.run import EmptyTrainingSplit, GraphMismatch, TrainingRun, run_training
from ops.training.settings import SETTINGS_DOC, check_settings, settings_fields, train_config_for

TRAINING_GROUP = "training"


def _check(config: dg.Config) -> dg.Config:
    check_settings(config.model_dump())
    return config


# The launchpad's ``distributed`` section, built from the settings model's fields.
DistributedConfig = dagster_config(DistributedSettings, "DistributedConfig", __name__)


def _config_fields() -> dict[str, tuple[object, pydantic.fields.FieldInfo]]:
    fields = settings_fields()
    fields["distributed"] = (
        DistributedConfig,
        pydantic.Field(default_factory=DistributedConfig, description=DistributedSettings.__doc__),
    )
    return fields


# Built from TrainConfig's fields, so the launchpad lists every hyper-parameter with its
# default, and a value TrainConfig refuses fails the step before any data is read.
TrainingConfig = pydantic.create_model(
    "TrainingConfig",
    __base__=dg.Config,
    __doc__=SETTINGS_DOC,
    __module__=__name__,
    __validators__={"_check_settings": pydantic.model_validator(mode="after")(_check)},
    **_config_fields(),
)


def _metadata(run: TrainingRun) -> dict[str, object]:
    model = run.manifest
    return {
        "run_id": model.run_id,
        "rows": run.rows,
        "seconds": run.seconds,
        "device": model.device,
        "world_size": run.world_size,
        "feature_placement": model.feature_placement,
        "best_epoch": model.best_epoch,
        f"best_val_{run.score_name}": model.best_val_score,
        "best_val_metrics": dg.MetadataValue.json(model.best_val_metrics),
        "epochs_run": run.epochs_run,
        "resumed_from_epoch": run.resumed_from_epoch,
        "stopped_early": run.stopped_early,
        "champion": model.champion,
        "champion_reason": model.champion_reason,
        "validation_scope": model.validation_scope,
        "curves": png_bytes_value(run.curves_png),
        "config": dg.MetadataValue.json(run.config),
        "graph": dg.MetadataValue.json(model.graph),
        "checkpoint": dg.MetadataValue.path(model.checkpoint),
    }


def _train(
    context: dg.AssetExecutionContext,
    config: dg.Config,
    task: Task,
    network: Network,
    inputs: dict[str, str],
    graph: NeighborhoodGraphFile,
    dataset: str,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[TrainedModel]:
    train_config = train_config_for(config.model_dump(), task, network, compute.device_name)
    try:
        if train_config.distributed.world_size > 1:
            request = TrainingRequest(
                str(storage.root), dataset, inputs, train_config, graph, config.val_max_images
            )
            run = train_with_torchrun(context, request)
        else:
            run = run_training(
                storage.root,
                dataset,
                inputs,
                train_config,
                graph,
                val_max_images=config.val_max_images,
                log=context.log.info,
            )
    except (EmptyTrainingSplit, GraphMismatch) as error:
        raise dg.Failure(str(error)) from error
    return dg.Output(run.manifest, metadata=_metadata(run))


# Per task: its upstream assets and what each hands on; the run reads each one's file.
TASK_UPSTREAM: Mapping[Task, Mapping[str, type | types.UnionType]] = {
    "image_sentence": {"image_features": ImageFeatureFile, "text_features": TextFeatureFile},
    "phrase_region": {
        "region_features": RegionFeatureFile | Skipped,
        "region_proposals": RegionProposalFile | Skipped,
        "phrase_features": PhraseFeatureFile | Skipped,
    },
}


def training_asset(task: Task, network: Network, description: str) -> dg.AssetsDefinition:
    """The asset ``<task>_<network>_net``: reads its task's feature assets and the
    neighborhood graph (its positives and neighborhoods), trains, records."""
    upstream = TASK_UPSTREAM[task]

    @dg.asset(
        name=f"{task}_{network}_net",
        description=description,
        group_name=TRAINING_GROUP,
        kinds={"pytorch"},
        ins={
            name: dg.AssetIn(name, dagster_type=dagster_type(handoff))
            for name, handoff in upstream.items()
        },
        op_tags=accelerator_step_tags(),
        partitions_def=DATASETS,
    )
    @typed_handoffs
    def _asset(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        storage: TwobranchStorage,
        compute: ComputeSettings,
        neighborhood_graph: NeighborhoodGraphFile,
        **features: FeatureFile | RegionProposalFile | Skipped,
    ) -> dg.Output[TrainedModel | Skipped]:
        dataset = features[next(iter(upstream))].dataset
        if reason := skip_reason(*features.values()):
            return skipped_output(dataset, reason)
        inputs = {name: features[name].path for name in upstream}
        return _train(
            context, config, task, network, inputs, neighborhood_graph, dataset, storage, compute
        )

    return _asset


TRAINING_ASSETS = [
    training_asset(
        "image_sentence",
        "embedding",
        "The embedding network for image–sentence retrieval: bi-directional top-K ranking\n"
        "loss with the sentence neighborhood constraint, trained on neighborhood batches.",
    ),
    training_asset(
        "image_sentence",
        "similarity",
        "The similarity network for image–sentence retrieval: element-wise product fusion,\n"
        "logistic loss over positive and sampled negative pairs.",
    ),
    training_asset(
        "phrase_region",
        "embedding",
        "The embedding network for phrase localization, with the region–region neighborhood\n"
        "term (regions positive for the same phrase are neighbors).",
    ),
    training_asset(
        "phrase_region",
        "similarity",
        "The similarity network for phrase localization (positives IoU ≥ 0.6, negatives\n"
        "IoU < 0.3), logistic loss.",
    ),
]
