"""Every shipped run configuration is valid for `full_pipeline`, checked in process against
the job's own config schema, and the profiles say what they claim."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_shared.yaml_utils import load_yaml_from_glob_list

from assets import cli
from assets.automation import JOBS
from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.deployment import executor_from_env
from assets.resources import ComputeSettings, TwobranchStorage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
PROFILES = ["paper_flickr30k_entities", "lab_flickr30k", "coco_5k"]
# Overlays and the profile each one is run on top of.
OVERLAYS = {"k8s_flickr30k_entities": "paper_flickr30k_entities"}


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def _run_config(name: str) -> dict:
    """What ``dagster job execute -c <overlay> -c <base>`` runs: Dagster's own merge."""
    if name not in OVERLAYS:
        return _load(name)
    files = [str(CONFIGS / f"{name}.yaml"), str(CONFIGS / f"{OVERLAYS[name]}.yaml")]
    return load_yaml_from_glob_list(files)


def _full_pipeline() -> dg.JobDefinition:
    definitions = dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=JOBS,
        resources={"storage": TwobranchStorage(), "compute": ComputeSettings()},
        executor=executor_from_env(),
    )
    return definitions.resolve_job_def("full_pipeline")


def test_the_profiles_are_shipped() -> None:
    assert {path.stem for path in SHIPPED} >= {
        *PROFILES,
        "synthetic_demo",
        "k8s_flickr30k_entities",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_every_shipped_config_validates_against_full_pipeline(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cluster configurations carry the Kubernetes executor's settings.
    if path.name.startswith("k8s_"):
        monkeypatch.setenv("TWOBRANCH_EXECUTOR", "k8s")
    else:
        monkeypatch.delenv("TWOBRANCH_EXECUTOR", raising=False)
    dg.validate_run_config(_full_pipeline(), _run_config(path.stem))  # raises if not valid


def test_a_config_with_a_mistake_is_refused() -> None:
    broken = _load("paper_flickr30k_entities")
    broken["ops"]["region_proposals"]["config"]["max_proposals"] = 200  # the old name
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_proposals"):
        dg.validate_run_config(_full_pipeline(), broken)


def test_the_paper_profile_is_the_papers_setup() -> None:
    ops = _load("paper_flickr30k_entities")["ops"]
    assert ops["image_features"]["config"] | {"batch_size": None} == {
        "backbone": "vgg19", "weights": "IMAGENET1K_V1", "ten_crop": True, "batch_size": None,
    }  # fmt: skip
    proposals = ops["region_proposals"]["config"]
    assert proposals["num_proposals"] == 200 and proposals["whole_image"] is False
    assert "max_side" not in proposals and proposals["edge_model_path"]  # full-size EdgeBoxes
    regions = ops["region_features"]["config"]
    assert regions["backbone"] == "vgg19" and regions["region_path"] == "fast_rcnn"
    assert (regions["shorter_side"], regions["max_longer_side"]) == (600, 1000)
    assert regions["roi_pooling"] == "max" and regions["spatial_features"] is False
    assert ops["word_vectors"]["config"]["source"] == "file"
    for kind in ("text_features", "phrase_features"):
        assert ops[kind]["config"] == {
            "method": "fisher", "fisher_components": 30, "word_dim": 300,
            "word_transform": "ica", "pca_dim": 6000,
        }  # fmt: skip
    # The paper's hyper-parameters are the defaults: training assets only turn bf16 off.
    networks = {name: op["config"] for name, op in ops.items() if name.endswith("_net")}
    assert networks == {
        name: {"amp": False}
        for name in (
            "image_sentence_embedding_net",
            "image_sentence_similarity_net",
            "phrase_region_embedding_net",
            "phrase_region_similarity_net",
        )
    }


def test_the_cluster_overlay_adds_shards_to_the_paper_profile_and_the_cli_prints_the_merge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    paper = _load("paper_flickr30k_entities")["ops"]
    overlay = _load("k8s_flickr30k_entities")
    assert {name: op["config"] for name, op in overlay["ops"].items()} == {
        "image_features": {"shards": 8},
        "region_proposals": {"shards": 32},
        "region_features": {"shards": 8},
    }
    merged = _run_config("k8s_flickr30k_entities")
    assert merged["execution"] == overlay["execution"]
    assert merged["ops"]["region_features"]["config"]["backbone"] == "vgg19"
    without_shards = {
        name: {"config": {k: v for k, v in op["config"].items() if k != "shards"}}
        for name, op in merged["ops"].items()
    }
    assert without_shards == paper
    overlay_file = CONFIGS / "k8s_flickr30k_entities.yaml"
    base_file = CONFIGS / "paper_flickr30k_entities.yaml"
    assert cli.main(["profile", str(overlay_file), str(base_file)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == merged
    assert cli.main(["profile", str(CONFIGS / "absent.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_lab_and_coco_profiles() -> None:
    lab = _load("lab_flickr30k")["ops"]
    assert lab["image_features"]["config"]["backbone"] == "resnet152"
    assert lab["text_features"]["config"]["method"] == "mean"
    assert lab["image_sentence_embedding_net"]["config"]["lambda_neighbor"] == 0.1
    coco = _load("coco_5k")["ops"]
    assert coco["retrieval_eval"]["config"]["protocols"] == ["1k", "5fold_1k", "5k"]
    assert coco["image_sentence_embedding_net"]["config"] == {"amp": False}
