"""One list of training hyper-parameters: the Dagster config of the training assets is
derived from TrainConfig, and so are the loss's defaults."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from pydantic import BaseModel, ValidationError

from assets import training as training_assets
from assets.definitions import defs
from assets.graph import GraphConfig
from assets.training import TRAINING_ASSETS, TrainingConfig
from models.losses import EmbeddingLossConfig
from ops.handoffs import Handoff, ImageFeatureFile, NeighborhoodGraphFile, TextFeatureFile
from ops.training.batch_plans import BatchPlan
from ops.training.config import TrainConfig
from ops.training.settings import NETWORK_DEFAULTS, SET_BY_CALLER, train_config_for
from tests.training_problems import make_image_sentence


def test_loss_defaults_are_the_loss_configs() -> None:
    assert TrainConfig().loss_config() == EmbeddingLossConfig()


def _with_upstream(asset: dg.AssetsDefinition) -> list:
    """The asset and its upstream assets as external specs (loaded by the IO manager)."""
    return [asset, *(dg.AssetSpec(key) for key in asset.keys_by_input_name.values())]


def _launchpad_fields(asset: dg.AssetsDefinition) -> dict:
    """The config fields the UI's launchpad offers for the asset in the retrain job."""
    job = defs.resolve_job_def("retrain")
    ops = job.run_config_schema.config_type.fields["ops"].config_type
    return ops.fields[asset.op.name].config_type.fields["config"].config_type.fields


def test_launchpad_lists_every_train_config_field_with_its_default() -> None:
    expected = {
        name: info.default.model_dump() if isinstance(info.default, BaseModel) else info.default
        for name, info in TrainConfig.model_fields.items()
        if name not in SET_BY_CALLER
    } | {"lr": None, "hidden_dim": None, "val_max_images": 0}
    for asset in TRAINING_ASSETS:
        fields = _launchpad_fields(asset)
        assert set(fields) == set(expected), asset.op.name
        for name, default in expected.items():
            field = fields[name]
            assert not field.is_required, name
            assert (field.default_value if field.default_provided else None) == default, name
    assert {"weight_decay", "amp", "eval_chunk", "cross_image_negatives"} <= set(expected)
    assert expected["distributed"] == {"nproc_per_node": 1, "nnodes": 1, "backend": "auto"}


def test_unset_lr_and_width_take_the_networks_defaults() -> None:
    assert NETWORK_DEFAULTS == {
        "embedding": {"lr": 1e-4, "hidden_dim": 2048},
        "similarity": {"lr": 5e-5, "hidden_dim": 1024},
    }
    settings = TrainingConfig(epochs=3, val_max_images=7).model_dump()
    for network, defaults in NETWORK_DEFAULTS.items():
        config = train_config_for(settings, "phrase_region", network, "cpu")
        assert (config.lr, config.hidden_dim) == (defaults["lr"], defaults["hidden_dim"])
        assert (config.task, config.network, config.device, config.epochs) == (
            "phrase_region",
            network,
            "cpu",
            3,
        )
    chosen = TrainingConfig(lr=3e-3, hidden_dim=64, negative_side="mixed").model_dump()
    config = train_config_for(chosen, "image_sentence", "similarity", "auto")
    assert (config.lr, config.hidden_dim, config.negative_side) == (3e-3, 64, "mixed")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dropout": 1.5}, "less than 1"),
        ({"negative_iou": 1.5}, "less than or equal to 1"),
        ({"lr": -1.0}, "greater than 0"),
    ],
)
def test_invalid_settings_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingConfig(**values)
    with pytest.raises(ValidationError, match=message):
        TrainConfig(**values)


MISSING = {"dataset": "toy", "path": "/nonexistent.parquet"}
# What the image–sentence training step reads, as its upstream assets hand it on.
UPSTREAM = {
    "image_features": ImageFeatureFile(
        **MISSING, rows=0, dim=4, variant="toy", feature_dtype="float32"
    ),
    "text_features": TextFeatureFile(
        **MISSING, rows=0, dim=4, variant="toy", fingerprint="0", encoder="/nonexistent.pkl"
    ),
    "neighborhood_graph": NeighborhoodGraphFile(**MISSING, fingerprint="0", settings={}, edges={}),
}


class _FakeFeatures(dg.IOManager):
    """Hands every input its upstream asset's hand-off, so the training step gets to its
    config."""

    def handle_output(self, context, obj) -> None:
        pass

    def load_input(self, context) -> Handoff:
        return UPSTREAM[context.asset_key.path[-1]]


def test_invalid_run_config_fails_the_step_before_training(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(training_assets, "run_training", lambda *a, **k: calls.append(a))
    asset = TRAINING_ASSETS[0]
    result = dg.materialize(
        _with_upstream(asset),
        selection=[asset.key],
        run_config={"ops": {asset.op.name: {"config": {"dropout": 1.5}}}},
        resources={
            "io_manager": _FakeFeatures(),
            "storage": training_assets.TwobranchStorage(data_root="/nonexistent"),
            "compute": training_assets.ComputeSettings(device="cpu"),
        },
        raise_on_error=False,
    )
    assert not result.success and calls == []
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "less than 1" in str(failure.event_specific_data.error)


@pytest.mark.parametrize("side", ["caption", "image", "mixed"])
def test_negative_side_reaches_the_pair_sampler(side: str) -> None:
    config = TrainConfig(network="similarity", similarity_batch=10, negative_side=side)
    plan = BatchPlan(config, make_image_sentence(10, 0))
    assert plan.sampler.negative_side == side
    batch = next(iter(plan.sampler))
    assert (batch.labels == -1).sum() == 2 * 10


def test_positive_iou_is_declared_once_in_the_graph_settings() -> None:
    assert "positive_iou" not in TrainConfig.model_fields
    assert "positive_iou" not in TrainingConfig.model_fields
    assert GraphConfig.model_fields["positive_iou"].default == 0.6
    op = TRAINING_ASSETS[0].op.name
    with pytest.raises(dg.DagsterInvalidConfigError, match="positive_iou"):
        dg.validate_run_config(
            defs.resolve_job_def("retrain"), {"ops": {op: {"config": {"positive_iou": 0.6}}}}
        )
    # Older checkpoints, written when training had its own copy, still load.
    legacy = TrainConfig().model_dump(mode="json") | {"positive_iou": 0.6}
    assert TrainConfig.from_json(json.dumps(legacy)) == TrainConfig()


def test_unknown_negative_side_is_refused() -> None:
    with pytest.raises(ValidationError, match="negative_side"):
        TrainingConfig(negative_side="both")
