"""Region features: the trunk runs once per image, each proposal is pooled from its conv map,
and the backbone's head turns each pooled crop into one vector.

Two paths (``region_path``; ``auto`` picks Fast R-CNN where the network has it):

- ``fast_rcnn`` (VGG, AlexNet; ``ops.features.fast_rcnn``): the image keeps its aspect ratio
  (shorter side 600, longer side at most 1,000), the trunk stops before its last max-pool
  (stride 16, VGG conv5_3), and each box is pooled to the classifier's own grid for fc6 → fc7.
  One image at a time goes through the trunk, since sizes differ.
- ``square`` (every backbone): images are resized whole (no crop) to ``image_size ×
  image_size`` and pooled from the last (stride-32) map. On 128-px sources a ResNet's map
  would be 4×4, too coarse to tell small boxes apart; the default size (224, the backbone's
  native one) upsamples them to a 7×7 map at about 3.5× the trunk cost.

``roi_pooling``: ``align`` (RoIAlign, bilinear samples) or ``max`` (Fast R-CNN's RoI max
pooling). Boxes map to the network input by the image's two resize factors.
``spatial_features`` appends the box geometry ``x1/W, y1/H, x2/W, y2/H, area/(W·H)`` in
original-image units.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torchvision.ops import roi_align, roi_pool

from ops.device import autocast_context, resolve_device
from ops.features.backbones import (
    Backbone,
    build_backbone,
    family_of,
    resize_transform,
    variant_name,
)
from ops.features.fast_rcnn import FAST_RCNN_GRIDS, fast_rcnn_backbone, resolve_region_path
from ops.features.image_features import ImageFileDataset, check_columns, make_loader, to_device
from ops.features.settings import RegionFeatureSettings, RegionPath, RoiPooling
from ops.storage.parquet_io import FeatureWriter, iter_batches

Progress = Callable[[int, int], None]
REGION_ID_COLUMNS = {"image_id": pa.string(), "region_id": pa.string()}
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
SPATIAL_DIM = 5
# Pooled crops held at once: bounds memory whatever the batch, backbone or proposal count.
POOLED_ELEMENTS_PER_CHUNK = 1 << 24


@dataclass(frozen=True)
class RegionFeatureStats:
    rows: int
    images: int
    dim: int
    seconds: float
    images_per_second: float
    regions_per_second: float
    variant: str
    region_path: RegionPath


def region_variant(settings: RegionFeatureSettings) -> str:
    """File-name variant: ``resnet18_spatial``, ``resnet18_128``, ``vgg19_imagenet1k_v1``,
    ``vgg19_imagenet1k_v1_frcnn600x1000_roimax`` (random-init weights add nothing; other
    weights add :func:`weights_tag`; the square path with RoIAlign adds no path flag).
    ``auto`` is resolved by the backbone's family."""
    region_path = settings.region_path
    if region_path == "auto":
        region_path = resolve_region_path(family_of(settings.backbone), region_path)
    flags = []
    if region_path == "fast_rcnn":
        flags.append(f"frcnn{settings.shorter_side}x{settings.max_longer_side}")
    if settings.roi_pooling == "max":
        flags.append("roimax")
    if settings.spatial_features:
        flags.append("spatial")
    return variant_name(settings.backbone, settings.weights, settings.image_size, *flags)


def default_roi_output_size(backbone: Backbone) -> int:
    """The grid the head expects: VGG 7×7, AlexNet 6×6; pooling heads need only a coarse one.

    RoIAlign samples adaptively (about one point per map cell), so a 2×2 grid averaged by a
    pooling head covers the box as well as 7×7 does, at a fraction of the cost.
    """
    return FAST_RCNN_GRIDS.get(backbone.family, 2)


def proposal_image_order(proposals_path: Path) -> list[str]:
    """Image ids in file order; each image's rows must be contiguous."""
    order: list[str] = []
    seen: set[str] = set()
    last: str | None = None
    for batch in iter_batches(proposals_path, 1 << 16, columns=["image_id"]):
        ids = batch.column(0).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for image_id in ids[starts]:
            if image_id == last:
                continue
            if image_id in seen:
                raise ValueError(f"{proposals_path}: rows of image {image_id!r} are not contiguous")
            seen.add(image_id)
            order.append(image_id)
            last = image_id
    return order


def proposal_groups(
    proposals_path: Path, rows_per_read: int = 1 << 16
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(image_id, region_ids, boxes (n, 4))`` per image, streamed in file order."""
    pending_ids: list[np.ndarray] = []
    pending_regions: list[np.ndarray] = []
    pending_boxes: list[np.ndarray] = []
    columns = ["image_id", "region_id", *BOX_COLUMNS]
    for batch in iter_batches(proposals_path, rows_per_read, columns=columns):
        ids = batch.column(0).to_numpy(zero_copy_only=False)
        regions = batch.column(1).to_numpy(zero_copy_only=False)
        boxes = np.column_stack([batch.column(i).to_numpy() for i in range(2, 6)])
        pending_ids.append(ids)
        pending_regions.append(regions)
        pending_boxes.append(boxes.astype(np.float32))
        all_ids = np.concatenate(pending_ids)
        all_regions = np.concatenate(pending_regions)
        all_boxes = np.concatenate(pending_boxes)
        starts = np.flatnonzero(np.r_[True, all_ids[1:] != all_ids[:-1]])
        # The last group may continue in the next batch: keep it pending.
        for begin, end in zip(starts[:-1], starts[1:], strict=True):
            yield all_ids[begin], all_regions[begin:end], all_boxes[begin:end]
        tail = starts[-1]
        pending_ids = [all_ids[tail:]]
        pending_regions = [all_regions[tail:]]
        pending_boxes = [all_boxes[tail:]]
    if pending_ids and len(pending_ids[0]):
        yield pending_ids[0][0], pending_regions[0], pending_boxes[0]


def spatial_columns(
    boxes: np.ndarray, widths: np.ndarray | float, heights: np.ndarray | float
) -> np.ndarray:
    """``x1/W, y1/H, x2/W, y2/H, area/(W·H)`` for ``(n, 4)`` boxes in original pixels.

    ``widths``/``heights``: one image size for all rows, or one per row.
    """
    w = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(boxes),))
    h = np.broadcast_to(np.asarray(heights, dtype=np.float64), (len(boxes),))
    relative = np.asarray(boxes, dtype=np.float64) / np.column_stack([w, h, w, h])
    area = np.clip(relative[:, 2] - relative[:, 0], 0, None) * np.clip(
        relative[:, 3] - relative[:, 1], 0, None
    )
    return np.column_stack([relative, area]).astype(np.float32)


def pool_regions(
    backbone: Backbone,
    conv_maps: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    device: torch.device,
    *,
    roi_pooling: RoiPooling,
    amp: bool = True,
) -> torch.Tensor:
    """Head vectors for ``rois`` ``(K, 5)`` = (batch index, x1, y1, x2, y2) in input pixels."""
    # Box coordinates stay float32: in bf16 they would be off by pixels.
    boxes = rois.to(device=device, dtype=torch.float32)
    with autocast_context(device, amp):
        if roi_pooling == "max":
            pooled = roi_pool(conv_maps, boxes, output_size, spatial_scale=1.0 / backbone.stride)
        else:
            pooled = roi_align(
                conv_maps,
                boxes,
                output_size=output_size,
                spatial_scale=1.0 / backbone.stride,
                sampling_ratio=-1,
                aligned=True,
            )
        vectors = backbone.head(pooled)
    return vectors.float().cpu()


def extract_region_features(
    images: pd.DataFrame,
    proposals_path: Path,
    out_path: Path,
    settings: RegionFeatureSettings,
    *,
    num_workers: int,
    device: str,
    progress: Progress | None = None,
    dataset: str = "",
    image_range: tuple[int, int] | None = None,
    network: Backbone | None = None,
    roi_output_size: int | None = None,
) -> RegionFeatureStats:
    """One vector per proposal row of ``proposals_path`` (plus 5 geometry values), in order.

    ``network``: an already built network in place of ``settings.backbone`` and
    ``settings.weights``. ``image_range``: ``(start, stop)`` restricts the work to those
    images, counted in the proposals file's image order (one shard of the extraction; see
    ``ops.features.shards``).

    ``region_path``: ``square``, ``fast_rcnn`` or ``auto`` (see the module docstring);
    ``image_size``: side of the square path's input (default: the backbone's, 224), not
    allowed with the Fast R-CNN path, which resizes by ``shorter_side``/``max_longer_side``
    and reads one image at a time (``batch_size`` applies to the square path);
    ``roi_output_size``: pooling grid (default: what the head expects, see
    :func:`default_roi_output_size`). Images without proposals are skipped.
    """
    check_columns(images, ["image_id", "path"], "images table")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    image_size, spatial_features = settings.image_size, settings.spatial_features
    shorter_side, max_longer_side = settings.shorter_side, settings.max_longer_side
    roi_pooling, batch_size = settings.roi_pooling, settings.batch_size
    net = (
        network
        if network is not None
        else build_backbone(settings.backbone, settings.weights, image_size)
    )
    path = resolve_region_path(net.family, settings.region_path)
    # The file names the network that ran and the path it took.
    variant = region_variant(
        settings.model_copy(
            update={"backbone": net.name, "weights": net.weights, "region_path": path}
        )
    )
    if path == "fast_rcnn":
        if image_size is not None:
            raise ValueError(
                f"image_size {image_size} sets the square path's input; the Fast R-CNN path "
                "resizes by shorter_side and max_longer_side (or choose region_path square)"
            )
        net = fast_rcnn_backbone(net, shorter_side, max_longer_side)
        transform, batch_size = net.transform, 1
    else:
        if image_size is not None:
            net = dataclasses.replace(net, input_size=int(image_size))
        transform = resize_transform(net.input_size, net.mean, net.std)
    net.modules_to(torch_device, channels_last=True)
    output_size = roi_output_size or default_roi_output_size(net)
    paths = images.assign(image_id=images["image_id"].astype(str)).set_index("image_id")["path"]
    if paths.index.has_duplicates:
        repeated = paths.index[paths.index.duplicated()].unique().tolist()
        raise ValueError(f"images table repeats image ids, e.g. {repeated[:3]}")
    order = proposal_image_order(Path(proposals_path))
    first, last = (0, len(order)) if image_range is None else image_range
    if not 0 <= first <= last <= len(order):
        raise ValueError(
            f"image_range {image_range} is outside the {len(order)} images of {proposals_path}"
        )
    order = order[first:last]
    unknown = [image_id for image_id in order if image_id not in paths.index]
    if unknown:
        raise ValueError(
            f"{proposals_path}: {len(unknown)} image ids are not in the images table, "
            f"e.g. {unknown[:3]}"
        )
    loader = make_loader(
        ImageFileDataset(paths.loc[order].astype(str).tolist(), transform),
        batch_size,
        num_workers,
        torch_device,
    )
    dim = net.dim + (SPATIAL_DIM if spatial_features else 0)
    metadata = {
        "kind": "region",
        "dataset": dataset,
        "backbone": net.name,
        "weights": net.weights,
        "variant": variant,
        "region_path": path,
        "stride": str(net.stride),
        "image_size": (
            f"shorter {shorter_side}, longer at most {max_longer_side}"
            if path == "fast_rcnn"
            else str(net.input_size)
        ),
        "roi_pooling": roi_pooling,
        "roi_output_size": str(output_size),
        "spatial_features": str(bool(spatial_features)),
    }
    groups = itertools.islice(proposal_groups(Path(proposals_path)), first, last)
    images_done = 0
    with FeatureWriter(out_path, REGION_ID_COLUMNS, dim, metadata) as writer:
        with torch.inference_mode():
            for pixels, sizes in loader:
                batch = [next(groups) for _ in range(pixels.shape[0])]
                with autocast_context(torch_device):
                    conv_maps = net.trunk(to_device(pixels, torch_device))
                _write_batch(
                    writer,
                    net,
                    conv_maps,
                    batch,
                    sizes=sizes.numpy(),
                    input_shape=(int(pixels.shape[-1]), int(pixels.shape[-2])),
                    output_size=output_size,
                    spatial_features=spatial_features,
                    device=torch_device,
                    roi_pooling=roi_pooling,
                )
                images_done += len(batch)
                if progress is not None:
                    progress(images_done, len(order))
    seconds = time.perf_counter() - started
    return RegionFeatureStats(
        rows=writer.rows,
        images=images_done,
        dim=dim,
        seconds=seconds,
        images_per_second=images_done / seconds if seconds > 0 else 0.0,
        regions_per_second=writer.rows / seconds if seconds > 0 else 0.0,
        variant=variant,
        region_path=path,
    )


def _write_batch(
    writer: FeatureWriter,
    net: Backbone,
    conv_maps: torch.Tensor,
    batch: list[tuple[str, np.ndarray, np.ndarray]],
    sizes: np.ndarray,
    input_shape: tuple[int, int],
    output_size: int,
    spatial_features: bool,
    device: torch.device,
    roi_pooling: RoiPooling,
) -> None:
    """``input_shape``: (width, height) of the network input every image of the batch was
    resized to; ``sizes``: each image's own (width, height)."""
    image_ids = np.concatenate([np.full(len(regions), image_id) for image_id, regions, _ in batch])
    region_ids = np.concatenate([regions for _, regions, _ in batch])
    boxes = np.concatenate([boxes for _, _, boxes in batch]).astype(np.float64)
    counts = np.array([len(regions) for _, regions, _ in batch])
    widths = np.repeat(sizes[:, 0].astype(np.float64), counts)
    heights = np.repeat(sizes[:, 1].astype(np.float64), counts)
    scale = np.column_stack([widths, heights, widths, heights])
    input_width, input_height = input_shape
    to_input = np.array([input_width, input_height, input_width, input_height], dtype=np.float64)
    rois = np.column_stack([np.repeat(np.arange(len(batch)), counts), boxes * to_input / scale])
    rois_tensor = torch.from_numpy(rois.astype(np.float32))
    channels = conv_maps.shape[1]
    chunk = max(1, POOLED_ELEMENTS_PER_CHUNK // (channels * output_size * output_size))
    for begin in range(0, len(rois), chunk):
        end = min(begin + chunk, len(rois))
        vectors = pool_regions(
            net, conv_maps, rois_tensor[begin:end], output_size, device, roi_pooling=roi_pooling
        ).numpy()
        if spatial_features:
            geometry = spatial_columns(boxes[begin:end], widths[begin:end], heights[begin:end])
            vectors = np.hstack([vectors, geometry])
        writer.write(
            {"image_id": image_ids[begin:end], "region_id": region_ids[begin:end]}, vectors
        )
