"""Typed hand-offs between steps: every asset and op takes and returns ``ops.handoffs``
models, checked by Dagster at each step boundary, and a value of another kind (an old
dict-shaped output in an instance's storage) fails there with one clear line."""

from __future__ import annotations

import pickle
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.types.dagster_type import DagsterTypeKind

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.handoff_types import HandoffType, dagster_type, handoff_type_of, typed_handoffs
from assets.partitions import sync_dataset_partitions
from assets.resources import ComputeSettings, TwobranchStorage
from ops.handoffs import (
    FeatureShard,
    PublishedTables,
    RawDatasetFiles,
    ShardResult,
    Skipped,
    skip_reason,
)
from tests.pipeline_helpers import SMALL_SYNTHETIC


def _step_nodes(assets: Iterable[dg.AssetsDefinition]) -> Iterator[dg.NodeDefinition]:
    """Each asset's node, and for a graph asset every op inside it."""
    for asset in assets:
        node = asset.node_def
        yield node
        if isinstance(node, dg.GraphDefinition):
            yield from node.iterate_op_defs()


def _members(dagster_type: dg.DagsterType) -> tuple[type, ...]:
    """The hand-off classes a Dagster type checks for (of its items, for a list)."""
    if dagster_type.kind == DagsterTypeKind.LIST:
        dagster_type = dagster_type.inner_type  # type: ignore[attr-defined]
    return dagster_type.members if isinstance(dagster_type, HandoffType) else ()


def untyped_handoffs(assets: Iterable[dg.AssetsDefinition]) -> list[str]:
    """``node.input`` / ``node.output`` of every step value not checked as a hand-off."""
    return [
        f"{node.name}.{definition.name}: {definition.dagster_type.display_name}"
        for node in _step_nodes(assets)
        for definition in (*node.input_defs, *node.output_defs)
        if not _members(definition.dagster_type)
    ]


def test_every_asset_and_op_takes_and_hands_on_typed_handoffs() -> None:
    assert untyped_handoffs(ALL_ASSETS) == []
    # What the check sees: the phrase chain's skippable steps, by their annotations.
    nodes = {node.name: node for node in _step_nodes(ALL_ASSETS)}
    merge = nodes["region_proposals_merge"]
    assert merge.input_def_named("shards").dagster_type.display_name == "[ShardResultOrSkipped]"
    assert merge.output_def_named("result").dagster_type.display_name == (
        "RegionProposalFileOrSkipped"
    )
    tables = nodes["dataset_tables"]
    assert _members(tables.output_def_named("phrases").dagster_type) == (PublishedTables, Skipped)
    assert _members(tables.output_def_named("images").dagster_type) == (PublishedTables,)


def test_the_check_finds_a_step_that_takes_or_returns_a_dict() -> None:
    @dg.asset
    def loose(upstream: dict) -> dict:
        return upstream

    @dg.asset
    @typed_handoffs
    def typed(upstream: PublishedTables | Skipped) -> dg.Output[PublishedTables | Skipped]:
        return dg.Output(upstream)

    assert untyped_handoffs([loose, typed]) == [
        "loose.upstream: dict",
        "loose.result: dict",
    ]
    # Dagster reads the Dagster types; the function keeps its Python annotations.
    assert typing.get_type_hints(typed.op.compute_fn.decorated_fn)["upstream"] == (
        PublishedTables | Skipped
    )


def test_dagster_types_follow_the_annotations() -> None:
    either = dagster_type(FeatureShard | Skipped)
    # One type per set of classes, whichever order the union names them in.
    assert either is dagster_type(Skipped | FeatureShard) is handoff_type_of(FeatureShard | Skipped)
    assert isinstance(either, HandoffType) and either.display_name == "FeatureShardOrSkipped"
    assert dagster_type(list[ShardResult]).inner_type is dagster_type(ShardResult)
    assert dagster_type(dg.Output[FeatureShard | Skipped]) == dg.Output[either]
    assert dagster_type(dict) is dict and dagster_type(int | None) == int | None
    with pytest.raises(TypeError, match="not a hand-off class"):
        handoff_type_of(dict)

    shard = FeatureShard(dataset="toy", index=0, count=1, start=0, stop=4, total=4)
    skipped = Skipped(dataset="toy", reason="no phrase annotations in toy")
    assert either.problem(shard) is None and either.problem(skipped) is None
    assert either.problem(shard.model_dump()) == (
        "got a dict, not FeatureShard or Skipped (a hand-off stored in an earlier format: "
        "materialize the asset that made it again)"
    )
    assert either.problem("shard") == "got a str, not FeatureShard or Skipped"
    assert skip_reason(shard, skipped) == skipped.reason and skip_reason(shard) is None
    # What the IO manager stores between steps and processes.
    assert pickle.loads(pickle.dumps(skipped)) == skipped
    with pytest.raises(ValueError, match="frozen"):
        shard.start = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        FeatureShard(**shard.model_dump(), path="/elsewhere")


def _materialize(
    selection: list[str], root: Path, io_dir: Path, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=dg.AssetSelection.assets(*selection),
        run_config={"ops": {"raw_dataset": {"config": SMALL_SYNTHETIC}}}
        if "raw_dataset" in selection
        else None,
        resources={
            "storage": TwobranchStorage(data_root=str(root)),
            "compute": ComputeSettings(device="cpu", num_workers=0),
            "io_manager": dg.FilesystemIOManager(base_dir=str(io_dir)),
        },
        instance=instance,
        partition_key="synthetic",
        raise_on_error=False,
    )


def test_an_output_stored_as_a_dict_fails_the_next_steps_type_check(tmp_path: Path) -> None:
    root, io_dir = tmp_path / "data", tmp_path / "io"
    tables = ["images", "captions", "phrases"]
    with dg.instance_for_test() as instance:
        sync_dataset_partitions(instance, [])
        assert _materialize(["raw_dataset"], root, io_dir, instance).success
        stored = io_dir / "raw_dataset" / "synthetic"
        raw = pickle.loads(stored.read_bytes())
        assert isinstance(raw, RawDatasetFiles) and raw.dataset == "synthetic"
        # The same output as it was stored before hand-offs were typed.
        stored.write_bytes(pickle.dumps(raw.model_dump()))

        refused = _materialize(tables, root, io_dir, instance)
        assert not refused.success
        (failure,) = [e for e in refused.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert (
            'Type check failed for step input "raw_dataset" - expected type "RawDatasetFiles". '
            "Description: got a dict, not RawDatasetFiles (a hand-off stored in an earlier "
            "format: materialize the asset that made it again)"
        ) in message
        assert not (root / "tables").exists()  # the step never ran

        # Materialized again, the upstream asset hands on its typed value and the step runs.
        assert _materialize(["raw_dataset", *tables], root, io_dir, instance).success
        published = pickle.loads((io_dir / "images" / "synthetic").read_bytes())
        assert isinstance(published, PublishedTables)
        assert Path(published.tables_dir).is_dir()
