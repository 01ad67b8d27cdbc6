"""The proposals table held compactly: one row per region, with no Python object per row.

Read as a DataFrame, the proposals of Flickr30K Entities (6.4 million rows of string ids)
take about 300 bytes a row; here a row is an image code (int32), its region id as a numpy
``StringDType`` string (ids of up to 15 bytes are stored inline), its box as stored
(float32 in a proposals file) and whether it is a ground-truth box: about 40 bytes. The file
is read batch by batch, only these columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ops.storage.parquet_io import iter_batches

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
REGION_COLUMNS = ["image_id", "region_id", *BOX_COLUMNS, "source"]
GROUND_TRUTH = "ground_truth"
PROPOSAL = "proposal"
STRINGS = np.dtypes.StringDType()
ROWS_PER_BATCH = 65_536


def strings(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow string column as a numpy ``StringDType`` array (no object per row kept)."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=STRINGS)


def positions(
    ids: np.ndarray, wanted: np.ndarray | pd.Series | pa.Array | pa.ChunkedArray
) -> np.ndarray:
    """Row of each of ``wanted`` in ``ids`` (−1 where absent), by Arrow's hash lookup: no
    index of Python strings over ``ids``."""
    if isinstance(wanted, pa.Array | pa.ChunkedArray):
        wanted_array = wanted.cast(pa.string())
    else:
        wanted_array = pa.array(np.asarray(wanted, dtype=STRINGS))
    found = pc.index_in(wanted_array, value_set=pa.array(np.asarray(ids, dtype=STRINGS)))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


class ImageCodes:
    """Image ids → dense codes, assigned in order of first sight and later renumbered so that
    codes follow the ids' sorted order (what ``np.unique`` on the ids would give)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def encode(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        names = encoded.dictionary.to_pylist()
        codes = self._codes
        local = np.array([codes.setdefault(name, len(codes)) for name in names], dtype=np.int32)
        return local[encoded.indices.to_numpy(zero_copy_only=False)]

    def sorted(self, *coded: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(the ids in sorted order, each of ``coded`` renumbered into them)."""
        names = np.array(list(self._codes), dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        return names[order], [rank[codes] for codes in coded]


@dataclass(frozen=True)
class RegionTable:
    """The proposals table's rows: ``image`` indexes ``image_ids`` (sorted), ``boxes`` are
    ``x1, y1, x2, y2`` as stored, ``is_gt`` marks ground-truth boxes (``source``)."""

    image_ids: np.ndarray
    image: np.ndarray
    region_ids: np.ndarray
    boxes: np.ndarray
    is_gt: np.ndarray
    is_proposal: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def image_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows ordered by image, file order within an image; each image's start in it)."""
        order = np.argsort(self.image, kind="stable")
        starts = np.searchsorted(self.image[order], np.arange(len(self.image_ids) + 1))
        return order, starts

    def proposal_frame(self, image_ids: Iterable[str]) -> pd.DataFrame:
        """The ``source == "proposal"`` rows of ``image_ids`` as a proposals DataFrame."""
        found = positions(self.image_ids, np.array(list(image_ids), dtype=object))
        wanted = np.zeros(len(self.image_ids), dtype=bool)
        wanted[found[found >= 0]] = True
        rows = np.flatnonzero(wanted[self.image] & self.is_proposal)
        frame = pd.DataFrame(
            {
                "image_id": self.image_ids[self.image[rows]],
                "region_id": self.region_ids[rows].astype(object),
            }
        )
        for k, column in enumerate(BOX_COLUMNS):
            frame[column] = self.boxes[rows, k]
        frame["source"] = PROPOSAL
        return frame


def _batches(proposals: str | Path | pd.DataFrame, batch_size: int) -> Iterator[pa.RecordBatch]:
    if isinstance(proposals, pd.DataFrame):
        table = pa.Table.from_pandas(proposals[REGION_COLUMNS], preserve_index=False)
        yield from table.to_batches(max_chunksize=batch_size)
    else:
        yield from iter_batches(proposals, batch_size, columns=REGION_COLUMNS)


def region_table(
    proposals: str | Path | pd.DataFrame | RegionTable, batch_size: int = ROWS_PER_BATCH
) -> RegionTable:
    """The proposals file (or a proposals DataFrame) as a :class:`RegionTable`, read
    ``batch_size`` rows at a time."""
    if isinstance(proposals, RegionTable):
        return proposals
    codes = ImageCodes()
    images, region_ids, boxes, is_gt, is_proposal = [], [], [], [], []
    for batch in _batches(proposals, batch_size):
        images.append(codes.encode(batch.column("image_id").cast(pa.string())))
        region_ids.append(strings(batch.column("region_id").cast(pa.string())))
        boxes.append(
            np.column_stack([batch.column(name).to_numpy() for name in BOX_COLUMNS])
            if batch.num_rows
            else np.zeros((0, 4), dtype=np.float32)
        )
        source = batch.column("source").cast(pa.string())
        is_gt.append(pc.equal(source, GROUND_TRUTH).to_numpy(zero_copy_only=False))
        is_proposal.append(pc.equal(source, PROPOSAL).to_numpy(zero_copy_only=False))
    image = np.concatenate(images) if images else np.zeros(0, dtype=np.int32)
    image_ids, (image,) = codes.sorted(image)
    return RegionTable(
        image_ids=image_ids,
        image=image,
        region_ids=np.concatenate(region_ids) if region_ids else np.zeros(0, dtype=STRINGS),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.float32),
        is_gt=np.concatenate(is_gt).astype(bool) if is_gt else np.zeros(0, dtype=bool),
        is_proposal=np.concatenate(is_proposal).astype(bool)
        if is_proposal
        else np.zeros(0, dtype=bool),
    )


def proposals_of(proposals: pd.DataFrame | RegionTable, image_ids: Iterable[str]) -> pd.DataFrame:
    """The ``source == "proposal"`` rows of ``image_ids`` (what localization chooses from)."""
    if isinstance(proposals, RegionTable):
        return proposals.proposal_frame(image_ids)
    return proposals[
        proposals["image_id"].isin(set(image_ids)) & (proposals["source"] == "proposal")
    ]
