"""``twobranch eval-retrieval`` and ``twobranch eval-grounding``: metrics of outside results.

Each command has an ``add_*_arguments(parser)`` and a ``run_*(args) -> exit code`` (0 done,
2 bad input, reported on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ops.data.tables import CAPTIONS_PER_IMAGE, DatasetFormatError
from ops.metrics.localization_rule import IOU_THRESHOLD
from ops.metrics.protocol_names import PROTOCOLS

PREDICTIONS_HELP = """\
PREDICTIONS.json is a JSON list with one record per phrase:
  {"image_id": "100197432", "caption_index": 0, "phrase_index": 1, "box": [x1, y1, x2, y2]}
"caption_index" (or "sentence") is the 0-based line of the image's Sentences/<id>.txt;
"phrase_index" is the 0-based order of the phrase in that sentence. Instead of both, a
record may give "phrase_id": "<image_id>#<caption_index>:<phrase_index>". Boxes are
0-based pixel coordinates with exclusive right/bottom edges (a 1-based inclusive VOC box
(xmin, ymin, xmax, ymax) is [xmin-1, ymin-1, xmax, ymax]). Every phrase of the evaluated
images counts: a phrase with a ground-truth box but no record is wrong; notvisual and
boxless phrases are excluded. A phrase with several ground-truth boxes is scored against
their union box.
"""


def _fail(command: str, message: str) -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return 2


def _format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_format_value(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def add_eval_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Retrieval metrics (R@1/5/10, median and mean rank, R-sum, both directions) of a "
        "stored similarity matrix."
    )
    parser.add_argument(
        "scores",
        type=Path,
        metavar="SCORES.npy",
        help="(n_images, n_captions) similarity matrix, higher = more similar; read in blocks",
    )
    mapping = parser.add_mutually_exclusive_group()
    mapping.add_argument(
        "--captions-per-image",
        type=int,
        default=CAPTIONS_PER_IMAGE,
        help=(
            "captions are grouped by image: caption c belongs to image c // K "
            f"(default {CAPTIONS_PER_IMAGE})"
        ),
    )
    mapping.add_argument(
        "--caption-image-ids",
        type=Path,
        metavar="IDS.npy",
        help="integer array (n_captions,): the image index (row) of each caption",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="all")
    parser.add_argument(
        "--fold-size", type=int, default=1000, help="images per fold of 1k/5k/5fold_1k"
    )
    parser.add_argument("--chunk", type=int, default=None, help="caption columns per block")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _load_caption_image(args: argparse.Namespace, n_images: int, n_captions: int) -> np.ndarray:
    if args.caption_image_ids is not None:
        mapping = np.load(args.caption_image_ids, allow_pickle=False)
        if mapping.ndim != 1 or not np.issubdtype(mapping.dtype, np.integer):
            raise ValueError(
                f"{args.caption_image_ids}: expected a 1-D integer array, got "
                f"{mapping.dtype} {mapping.shape}"
            )
        if len(mapping) != n_captions:
            raise ValueError(
                f"{args.caption_image_ids} has {len(mapping)} entries but {args.scores} has "
                f"{n_captions} caption columns"
            )
        return mapping.astype(np.int64)
    per_image = args.captions_per_image
    if per_image < 1 or n_images * per_image != n_captions:
        raise ValueError(
            f"{args.scores} has {n_images} image rows and {n_captions} caption columns, not "
            f"{per_image} captions per image; give --captions-per-image or --caption-image-ids"
        )
    return np.arange(n_captions, dtype=np.int64) // per_image


def run_eval_retrieval(args: argparse.Namespace) -> int:
    # The evaluators load torch: imported by the command, not by the parser that lists it.
    from ops.metrics.retrieval_protocols import evaluate_protocol_scores

    command = "eval-retrieval"
    try:
        scores = np.load(args.scores, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        return _fail(command, f"cannot read {args.scores}: {error}")
    if scores.ndim != 2:
        return _fail(command, f"{args.scores}: expected a 2-D matrix, got shape {scores.shape}")
    try:
        caption_image = _load_caption_image(args, *scores.shape)
        result = evaluate_protocol_scores(
            scores,
            caption_image,
            args.protocol,
            fold_size=args.fold_size,
            chunk=args.chunk,
            device=args.device,
        )
    except (OSError, ValueError) as error:
        return _fail(command, str(error))
    rows = [{key: _json_ready(value) for key, value in row.items()} for row in result.metrics]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        columns = ["protocol", "fold", "direction", "r1", "r5", "r10"]
        print(
            _table(rows, columns + ["median_rank", "mean_rank", "rsum", "r_precision", "map_at_r"])
        )
    return 0


def add_eval_grounding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Phrase localization accuracy (IoU >= {IOU_THRESHOLD} by default) of predicted boxes "
        "on Flickr30K Entities."
    )
    parser.epilog = PREDICTIONS_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "predictions",
        type=Path,
        metavar="PREDICTIONS.json",
        help="one predicted box per phrase (format below)",
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        required=True,
        metavar="DIR",
        help="Flickr30K Entities folder holding Sentences/ and Annotations/",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="text file of image ids to evaluate, one per line (default: the predicted images)",
    )
    parser.add_argument(
        "--iou",
        type=float,
        default=IOU_THRESHOLD,
        help="a box is correct at this IoU with the ground truth or more (default: %(default)s)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _integer_field(record: dict[str, Any], names: tuple[str, ...], where: str) -> int | None:
    for name in names:
        if name in record:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: {name!r} must be a non-negative integer")
            return value
    return None


def _parse_predictions(path: Path) -> pd.DataFrame:
    """``phrase_id, image_id, x1, y1, x2, y2`` of each record."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    except json.JSONDecodeError as error:
        raise DatasetFormatError(path, f"not valid JSON: {error.msg}", line=error.lineno) from None
    if not isinstance(records, list):
        raise DatasetFormatError(path, "expected a JSON list of prediction records")
    rows = []
    for number, record in enumerate(records):
        where = f"record {number}"
        try:
            if not isinstance(record, dict):
                raise ValueError(f"{where} is not an object")
            if "image_id" not in record:
                raise ValueError(f"{where} lacks 'image_id'")
            image_id = str(record["image_id"])
            if "phrase_id" in record:
                phrase_id = str(record["phrase_id"])
                if not phrase_id.startswith(f"{image_id}#"):
                    raise ValueError(f"{where}: phrase_id {phrase_id!r} is not of {image_id}")
            else:
                caption = _integer_field(record, ("caption_index", "sentence"), where)
                phrase = _integer_field(record, ("phrase_index",), where)
                if caption is None or phrase is None:
                    raise ValueError(
                        f"{where} needs 'phrase_id' or both 'caption_index' and 'phrase_index'"
                    )
                phrase_id = f"{image_id}#{caption}:{phrase}"
            box = record.get("box")
            if (
                not isinstance(box, list)
                or len(box) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
                or not all(math.isfinite(v) for v in box)
            ):
                raise ValueError(f"{where}: 'box' must be four finite numbers [x1, y1, x2, y2]")
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"{where}: box {box} has x2 < x1 or y2 < y1")
        except ValueError as error:
            raise DatasetFormatError(path, str(error)) from None
        rows.append((phrase_id, image_id, *map(float, box)))
    frame = pd.DataFrame(rows, columns=["phrase_id", "image_id", "x1", "y1", "x2", "y2"])
    duplicated = frame["phrase_id"].duplicated()
    if duplicated.any():
        first = frame["phrase_id"][duplicated].iloc[0]
        raise DatasetFormatError(path, f"phrase {first} is predicted more than once")
    return frame


def _image_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def run_eval_grounding(args: argparse.Namespace) -> int:
    from ops.data.flickr30k_entities import entities_phrases
    from ops.metrics.grounding import evaluate_grounding

    command = "eval-grounding"
    try:
        predictions = _parse_predictions(args.predictions)
        if args.images is not None:
            image_ids = _image_list(args.images)
        else:
            image_ids = list(dict.fromkeys(predictions["image_id"]))
        phrases = entities_phrases(args.annotations, image_ids)
        unknown = ~predictions["phrase_id"].isin(phrases["phrase_id"])
        if unknown.any():
            first = predictions["phrase_id"][unknown].iloc[0]
            raise DatasetFormatError(
                args.predictions,
                f"{int(unknown.sum())} record(s) name phrases not in {args.annotations} "
                f"for the evaluated images, e.g. {first}",
            )
        if not 0.0 < args.iou <= 1.0:
            raise ValueError(f"--iou {args.iou} is outside (0, 1]")
        result = evaluate_grounding(phrases, chosen_boxes=predictions, iou_threshold=args.iou)
    except (DatasetFormatError, ValueError) as error:
        return _fail(command, str(error))
    summary = {key: _json_ready(value) for key, value in result.summary.items()}
    per_type = [
        {key: _json_ready(value) for key, value in row.items()}
        for row in result.per_type.to_dict("records")
    ]
    if args.format == "json":
        print(json.dumps({"summary": summary, "per_type": per_type}, indent=2))
    else:
        overall = {"phrase_type": "all", **summary}
        print(_table([overall, *per_type], ["phrase_type", "n_phrases", "accuracy"]))
        print(
            f"excluded: {summary['n_notvisual']} notvisual, {summary['n_no_box']} without a "
            f"box; {summary['n_unpredicted']} evaluated phrase(s) had no prediction"
        )
    return 0
