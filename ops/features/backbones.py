"""Torchvision classification networks split into a conv trunk and a vector head.

``trunk(images) -> (N, C, h, w)`` is the last convolutional map; ``head(map) -> (N, D)`` is the
penultimate vector (VGG fc7 after ReLU, ResNet pooled, ...). Region features apply the head to
RoI-pooled crops of the trunk's map, so both halves are kept as separate modules.

Weights: ``"none"`` (deterministic random init), a torchvision weights name
(``"IMAGENET1K_V1"``, ``"ResNet152_Weights.IMAGENET1K_V2"``, ``"DEFAULT"``) read from the torch
cache, or the path of a local state-dict file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
LOCAL_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

# Name prefix of the torchvision builder → family; order matters (longest prefixes first).
FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("vgg", "vgg"),
    ("alexnet", "alexnet"),
    ("resnext", "resnet"),
    ("wide_resnet", "resnet"),
    ("resnet", "resnet"),
    ("regnet", "regnet"),
    ("squeezenet", "squeezenet"),
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3"),
    ("efficientnet", "efficientnet"),
    ("densenet", "densenet"),
    ("convnext", "convnext"),
    ("mnasnet", "mnasnet"),
    ("shufflenet_v2", "shufflenet_v2"),
)
SUPPORTED_FAMILIES = sorted({family for _, family in FAMILY_PREFIXES})


@dataclass
class Backbone:
    name: str
    family: str
    trunk: nn.Module
    head: nn.Module
    dim: int
    stride: int
    transform: Callable[[Any], torch.Tensor]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str

    def modules_to(self, device: torch.device, channels_last: bool) -> None:
        """Move trunk and head to ``device`` (optionally channels-last, faster for convs)."""
        for module in (self.trunk, self.head):
            module.to(device)
            if channels_last:
                module.to(memory_format=torch.channels_last)


def family_of(name: str) -> str:
    """The family of a torchvision classification model name, or a clear error."""
    known = set(torchvision.models.list_models(module=torchvision.models))
    if name not in known:
        raise ValueError(
            f"unknown backbone {name!r}: not a torchvision classification model "
            f"(supported families: {', '.join(SUPPORTED_FAMILIES)})"
        )
    for prefix, family in FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    raise ValueError(
        f"backbone {name!r} has no conv-trunk/head split here; supported families: "
        f"{', '.join(SUPPORTED_FAMILIES)}"
    )


def resize_transform(
    size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Callable[[Any], torch.Tensor]:
    """Whole image (no crop) resized to ``size × size``, so box coordinates scale linearly."""
    return T.Compose(
        [
            T.Resize((size, size), antialias=True),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def ten_crop_transform(
    crop_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Callable[[Any], torch.Tensor]:
    """The paper's 10-crop: shorter side to 256 (for 224 crops), corners+centre and flips.

    Returns a ``(10, 3, crop, crop)`` tensor per image.
    """
    resize = round(crop_size * 256 / 224)
    return T.Compose(
        [
            T.Resize(resize, antialias=True),
            T.TenCrop(crop_size),
            _StackCrops(T.Compose([T.ToTensor(), T.Normalize(mean, std)])),
        ]
    )


class _StackCrops:
    """Per-crop tensor conversion, stacked; a class (not a lambda) so workers can pickle it."""

    def __init__(self, per_crop: Callable[[Any], torch.Tensor]) -> None:
        self.per_crop = per_crop

    def __call__(self, crops: tuple[Any, ...]) -> torch.Tensor:
        return torch.stack([self.per_crop(crop) for crop in crops])


def weights_tag(weights: str) -> str | None:
    """A file-name part that tells weights apart: ``None`` for random init, the torchvision
    weights name in lower case (``imagenet1k_v1``), or a local file's stem plus a short hash
    of its absolute path (``finetuned-3f2a9c1b``)."""
    weights = (weights or "none").strip()
    if weights.lower() == "none":
        return None
    if _is_local_path(weights):
        path = Path(weights).expanduser().resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        stem = re.sub(r"[^a-z0-9]+", "_", path.name.split(".")[0].lower()).strip("_")
        return f"{stem or 'weights'}-{digest}"
    return re.sub(r"[^a-z0-9]+", "_", weights.lower()).strip("_")


def variant_name(backbone: str, weights: str, image_size: int | None, *flags: str) -> str:
    """``<backbone>[_<weights tag>][_<size>][_<flag>...]``: the file-name part of a CNN
    feature file, so features of different backbones, weights or sizes never share a file."""
    parts = [backbone, weights_tag(weights) or "", str(int(image_size)) if image_size else ""]
    return "_".join(part for part in [*parts, *flags] if part)


def _is_local_path(weights: str) -> bool:
    return (
        os.sep in weights
        or weights.startswith(".")
        or weights.lower().endswith(LOCAL_WEIGHT_SUFFIXES)
        or Path(weights).exists()
    )


def _torchvision_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    try:
        if "." in weights:
            enum_value = torchvision.models.get_weight(weights)
        else:
            enum_value = torchvision.models.get_model_weights(name)[weights]
    except (KeyError, ValueError, AttributeError) as err:
        available = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise ValueError(
            f"unknown weights {weights!r} for {name}; torchvision offers: {available}, "
            "or pass 'none' or a local state-dict path"
        ) from err
    expected = torchvision.models.get_model_weights(name)
    if not isinstance(enum_value, expected):
        raise ValueError(f"weights {weights!r} belong to another model than {name}")
    return enum_value


def _build_with_torchvision_weights(
    name: str, enum_value: torchvision.models.WeightsEnum
) -> nn.Module:
    try:
        return torchvision.models.get_model(name, weights=enum_value)
    except Exception as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum_value.url).name
        raise RuntimeError(
            f"could not load torchvision weights {enum_value} for {name}: {err}. "
            f"Without network access, put the file at {cache} (the torch cache), "
            "or pass the path of a local state-dict file as weights"
        ) from err


def _unwrap_checkpoint(loaded: Any) -> Any:
    """Accept a bare state dict or the common ``{"state_dict": ...}``/``{"model": ...}`` forms."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                return loaded[key]
    return loaded


def load_local_state_dict(model: nn.Module, path: Path) -> None:
    """Strictly load a state-dict file into ``model``; mismatches raise a ValueError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ValueError(f"{path}: not a loadable state-dict file ({err})") from err
    state = _unwrap_checkpoint(loaded)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    if state and all(str(key).startswith("module.") for key in state):
        state = {str(key)[len("module.") :]: value for key, value in state.items()}
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state
        and isinstance(state[key], torch.Tensor)
        and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else "")
        )
    if wrong_shape:
        problems.append(
            f"shape mismatches {wrong_shape[:5]}" + (" ..." if len(wrong_shape) > 5 else "")
        )
    if problems:
        raise ValueError(
            f"{path}: state dict does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def _pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _split(model: nn.Module, family: str) -> tuple[nn.Module, nn.Module, int, int]:
    """(trunk, head, dim, stride) for one family."""
    m: Any = model
    if family == "vgg":
        # classifier = fc6, relu, dropout, fc7, relu, dropout, fc8: keep through fc7's ReLU.
        head = nn.Sequential(m.avgpool, nn.Flatten(1), *list(m.classifier)[:5])
        return m.features, head, m.classifier[3].out_features, 32
    if family == "alexnet":
        head = nn.Sequential(m.avgpool, nn.Flatten(1), *list(m.classifier)[:6])
        return m.features, head, m.classifier[4].out_features, 32
    if family == "resnet":
        trunk = nn.Sequential(
            m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4
        )
        return trunk, _pool(), m.fc.in_features, 32
    if family == "regnet":
        return nn.Sequential(m.stem, m.trunk_output), _pool(), m.fc.in_features, 32
    if family == "squeezenet":
        return m.features, _pool(), m.classifier[1].in_channels, 16
    if family == "mobilenet_v2":
        return m.features, _pool(), m.last_channel, 32
    if family == "mobilenet_v3":
        return m.features, _pool(), m.classifier[0].in_features, 32
    if family == "efficientnet":
        return m.features, _pool(), m.classifier[-1].in_features, 32
    if family == "densenet":
        # DenseNet's forward applies a ReLU after the final norm before pooling.
        head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return m.features, head, m.classifier.in_features, 32
    if family == "convnext":
        # classifier = LayerNorm2d, Flatten, Linear: keep the norm, drop the logits.
        head = nn.Sequential(m.avgpool, m.classifier[0], m.classifier[1])
        return m.features, head, m.classifier[2].in_features, 32
    if family == "mnasnet":
        return m.layers, _pool(), m.classifier[-1].in_features, 32
    if family == "shufflenet_v2":
        trunk = nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
        return trunk, _pool(), m.fc.in_features, 32
    raise ValueError(f"unsupported family {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}")


def build_backbone(name: str, weights: str = "none", image_size: int | None = None) -> Backbone:
    """Build ``name`` with ``weights`` and split it into trunk and head, in eval mode.

    ``transform``: the weights' own preprocessing for torchvision weights when ``image_size``
    is None; otherwise a square resize to ``image_size`` (default 224) with the normalization.
    """
    family = family_of(name)
    weights = (weights or "none").strip()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    transform: Callable[[Any], torch.Tensor] | None = None
    # Random init must not depend on, nor disturb, the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if weights.lower() == "none":
            model = torchvision.models.get_model(name, weights=None)
        elif _is_local_path(weights):
            model = torchvision.models.get_model(name, weights=None)
            load_local_state_dict(model, Path(weights).expanduser())
        else:
            enum_value = _torchvision_weights(name, weights)
            model = _build_with_torchvision_weights(name, enum_value)
            preset = enum_value.transforms()
            mean = tuple(getattr(preset, "mean", IMAGENET_MEAN))
            std = tuple(getattr(preset, "std", IMAGENET_STD))
            if image_size is None:
                transform = preset
                crop = getattr(preset, "crop_size", [DEFAULT_IMAGE_SIZE])
                image_size = int(crop[0])
    model.eval().requires_grad_(False)
    trunk, head, dim, stride = _split(model, family)
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    if transform is None:
        transform = resize_transform(size, mean, std)
    return Backbone(
        name=name,
        family=family,
        trunk=trunk.eval(),
        head=head.eval(),
        dim=int(dim),
        stride=stride,
        transform=transform,
        input_size=size,
        mean=mean,
        std=std,
        weights=weights,
    )
