from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from ops.device import autocast_context, pin_memory_for, resolve_device
from ops.features.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone, weights_tag
from ops.features.image_features import extract_image_features, image_variant
from ops.features.settings import ImageFeatureSettings as Settings
from ops.storage.parquet_io import read_features

SIZES = [(48, 40), (40, 48), (36, 36), (44, 32), (32, 44)]


def make_images(folder: Path) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for index, (width, height) in enumerate(SIZES):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"im{index}.png"
        Image.fromarray(pixels).save(path)
        split = "train" if index < 3 else "test"
        rows.append(("tiny", f"im{index}", split, str(path), width, height))
    return pd.DataFrame(rows, columns=["dataset", "image_id", "split", "path", "width", "height"])


@pytest.fixture
def images(tmp_path: Path) -> pd.DataFrame:
    folder = tmp_path / "images"
    folder.mkdir()
    return make_images(folder)


def bare_features(images: pd.DataFrame, image_size: int, weights: str = "none") -> np.ndarray:
    net = build_backbone("resnet18", weights, image_size)
    batch = torch.stack([net.transform(Image.open(p).convert("RGB")) for p in images["path"]])
    with torch.inference_mode():
        return net.head(net.trunk(batch)).numpy()


def test_rows_dim_order_and_determinism(images: pd.DataFrame, tmp_path: Path) -> None:
    first, second, third = (tmp_path / f"{name}.parquet" for name in "abc")
    stats = extract_image_features(
        images, first, Settings(image_size=32, batch_size=2), num_workers=2, device="auto"
    )
    extract_image_features(
        images, second, Settings(image_size=32, batch_size=2), num_workers=0, device="auto"
    )
    extract_image_features(
        images, third, Settings(image_size=32, batch_size=3), num_workers=1, device="auto"
    )
    ids, matrix = read_features(first)
    _, again = read_features(second)
    _, rebatched = read_features(third)
    assert stats.rows == len(images) and stats.dim == 512
    assert stats.variant == "resnet18_32"
    assert ids["image_id"].tolist() == images["image_id"].tolist()
    assert ids["split"].tolist() == images["split"].tolist()
    assert matrix.shape == (len(images), 512) and matrix.dtype == np.float32
    assert np.isfinite(matrix).all()
    assert np.array_equal(matrix, again)
    # Another batch size may pick other conv kernels: equal up to float rounding.
    np.testing.assert_allclose(matrix, rebatched, atol=1e-5, rtol=1e-5)
    # Different images give different vectors (the features are not constant).
    assert np.abs(matrix[0] - matrix[1]).max() > 1e-3


def test_matches_bare_backbone_forward(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    extract_image_features(images, out, Settings(image_size=64), num_workers=0, device="auto")
    _, matrix = read_features(out)
    np.testing.assert_allclose(matrix, bare_features(images, 64), atol=1e-4, rtol=1e-4)


def test_local_state_dict_is_loaded(images: pd.DataFrame, tmp_path: Path) -> None:
    torch.manual_seed(123)
    model = torchvision.models.resnet18().eval()
    weights_file = tmp_path / "resnet18_custom.pth"
    torch.save(model.state_dict(), weights_file)
    out = tmp_path / "f.parquet"
    extract_image_features(
        images,
        out,
        Settings(weights=str(weights_file), image_size=32),
        num_workers=0,
        device="auto",
    )
    _, matrix = read_features(out)
    transform = T.Compose(
        [T.Resize((32, 32), antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images["path"]])
    without_fc = torch.nn.Sequential(*list(model.children())[:-1])
    with torch.inference_mode():
        expected = without_fc(batch).flatten(1).numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-4, rtol=1e-4)
    assert np.abs(matrix - bare_features(images, 32)).max() > 1e-3  # not the random init


def test_mismatched_state_dicts_name_the_file(tmp_path: Path) -> None:
    other_model = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), other_model)
    with pytest.raises(ValueError, match="squeezenet.pth") as caught:
        build_backbone("resnet18", str(other_model))
    assert "missing keys" in str(caught.value) and "conv1.weight" in str(caught.value)

    state = torchvision.models.resnet18().state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(state, wrong_shape)
    with pytest.raises(ValueError, match=r"wrong_shape\.pt.*fc\.weight \(10, 512\)"):
        build_backbone("resnet18", str(wrong_shape))

    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_backbone("resnet18", str(tmp_path / "absent.pth"))


def test_offline_torchvision_weights_explain_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(RuntimeError, match="torch cache") as caught:
        build_backbone("resnet18", "IMAGENET1K_V1")
    assert "resnet18-f37072fd.pth" in str(caught.value)
    with pytest.raises(ValueError, match="unknown weights"):
        build_backbone("resnet18", "IMAGENET9K_V9")


def test_ten_crop_averages_the_crops(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "ten.parquet"
    stats = extract_image_features(
        images, out, Settings(image_size=32, ten_crop=True), num_workers=0, device="auto"
    )
    assert stats.variant == "resnet18_32_10crop"
    _, matrix = read_features(out)
    net = build_backbone("resnet18", "none", 32)
    normalize = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    image = Image.open(images["path"].iloc[0]).convert("RGB")
    crops = T.TenCrop(32)(T.Resize(round(32 * 256 / 224), antialias=True)(image))
    assert len(crops) == 10
    with torch.inference_mode():
        expected = net.head(net.trunk(torch.stack([normalize(c) for c in crops]))).mean(0)
    np.testing.assert_allclose(matrix[0], expected.numpy(), atol=1e-4, rtol=1e-4)


def test_heads_have_the_papers_dimensions() -> None:
    vgg = build_backbone("vgg11")
    squeeze = build_backbone("squeezenet1_1")
    with torch.inference_mode():
        assert vgg.head(vgg.trunk(torch.randn(1, 3, 32, 32))).shape == (1, 4096)
        assert squeeze.head(squeeze.trunk(torch.randn(2, 3, 48, 48))).shape == (2, 512)
    assert vgg.dim == 4096 and squeeze.dim == 512 and squeeze.stride == 16
    with pytest.raises(ValueError, match="supported families"):
        build_backbone("vit_b_16")


def test_random_init_is_seeded_without_touching_global_rng() -> None:
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = build_backbone("resnet18").trunk[0].weight.clone()
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(build_backbone("resnet18").trunk[0].weight, first)


def test_interrupted_write_leaves_no_file(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "features" / "image_resnet18.parquet"

    def fail_after_first_batch(done: int, total: int) -> None:
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        extract_image_features(
            images,
            out,
            Settings(image_size=32, batch_size=2),
            num_workers=0,
            device="auto",
            progress=fail_after_first_batch,
        )
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_variant_names_and_device_helpers() -> None:
    assert image_variant("resnet18") == "resnet18"
    assert image_variant("vgg19", ten_crop=True) == "vgg19_10crop"
    assert image_variant("resnet152", image_size=448) == "resnet152_448"
    # Weights are part of the name, so random and pretrained features never share a file.
    assert image_variant("vgg19", True, weights="IMAGENET1K_V1") == "vgg19_imagenet1k_v1_10crop"
    assert image_variant("vgg19", weights="none") == "vgg19"
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    cpu = torch.device("cpu")
    with autocast_context(cpu, enabled=True):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert pin_memory_for(cpu) is False


def test_local_weights_are_named_by_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "finetuned.pt", tmp_path / "b" / "finetuned.pt"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"")
    tags = weights_tag(str(first)), weights_tag(str(second))
    assert all(tag.startswith("finetuned-") for tag in tags) and tags[0] != tags[1]
    assert weights_tag(str(first)) == tags[0]  # stable: reruns find their own file
    assert weights_tag("none") is None and weights_tag("DEFAULT") == "default"
