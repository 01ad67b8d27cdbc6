"""Localization accuracy against hand-computed IoUs, and eval-grounding on real samples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops.metrics import eval_cli
from ops.metrics.grounding import box_iou, evaluate_grounding, paired_iou
from ops.metrics.localization_rule import evaluable_phrases

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples" / "flickr30k_entities"


def test_evaluable_phrases_are_visual_with_a_box() -> None:
    nan = float("nan")
    phrases = pd.DataFrame(
        {
            "phrase_type": ["people", "notvisual", "people", "people", "scene"],
            "all_types": ["people", "notvisual", "people/notvisual", "people", None],
            "gt_x1": [0.0, 0.0, 0.0, nan, 1.0],
            "gt_y1": [0.0, 0.0, 0.0, nan, 1.0],
            "gt_x2": [2.0, 2.0, 2.0, nan, 3.0],
            "gt_y2": [2.0, 2.0, 2.0, 2.0, nan],
        }
    )
    # A phrase listing notvisual after its first type counts only when every type is read.
    assert evaluable_phrases(phrases, every_listed_type=True).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert evaluable_phrases(phrases, every_listed_type=False).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert evaluable_phrases(
        phrases.drop(columns="all_types"), every_listed_type=True
    ).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]


def test_box_iou_hand_computed() -> None:
    a = [[0, 0, 2, 2], [1, 1, 3, 3]]
    b = [[1, 1, 2, 2], [5, 5, 6, 6], [0, 0, 2, 2], [2, 0, 4, 2]]
    expected = [
        [1 / 4, 0.0, 1.0, 0.0],  # exclusive edges: (2,0,4,2) only touches (0,0,2,2)
        [1 / 4, 0.0, 1 / 7, 1 / 7],
    ]
    np.testing.assert_allclose(box_iou(a, b), expected)
    np.testing.assert_allclose(paired_iou(a, [[0, 0, 1, 2], [0, 0, 0, 0]]), [0.5, 0.0])
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 0.0  # empty boxes: no overlap
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    with pytest.raises(ValueError, match="x2 < x1"):
        box_iou([[2, 0, 1, 1]], b)


def tiny_example() -> tuple[pd.DataFrame, pd.DataFrame]:
    nan = np.nan
    phrases = pd.DataFrame(
        [
            ("p1", "A", "people", "people", 0, 0, 10, 10),
            ("p2", "A", "clothing", "clothing", 10, 10, 20, 20),
            ("p3", "B", "notvisual", "notvisual", nan, nan, nan, nan),
            ("p4", "B", "scene", "scene", nan, nan, nan, nan),
            ("p5", "B", "vehicles", "vehicles/scene", 0, 0, 4, 4),
            ("p6", "B", "animals", "animals", 0, 0, 2, 2),
        ],
        columns=["phrase_id", "image_id", "phrase_type", "all_types"]
        + ["gt_x1", "gt_y1", "gt_x2", "gt_y2"],
    )
    proposals = pd.DataFrame(
        [
            ("A", 0, 0, 0, 10, 10),
            ("A", 1, 0, 0, 5, 10),
            ("A", 2, 15, 15, 25, 25),
            ("B", 0, 0, 0, 4, 2),
            ("B", 1, 2, 2, 4, 4),
        ],
        columns=["image_id", "region_id", "x1", "y1", "x2", "y2"],
    )
    return phrases, proposals


def test_tiny_example_accuracy_and_upper_bound() -> None:
    phrases, proposals = tiny_example()
    # p1 → IoU 50/100 = 0.5 (correct); p2 → 25/175 (wrong); p5 → 4/16 (wrong); p6 unpredicted.
    chosen = pd.Series({"p1": 1, "p2": 2, "p5": 1, "p3": 0})
    result = evaluate_grounding(phrases, proposals, chosen_region=chosen)
    assert result.summary == {
        "accuracy": 25.0,
        "upper_bound": 75.0,  # p1 (region 0), p5 and p6 (region B/0 at 0.5); not p2
        "n_phrases": 4,
        "n_excluded": 2,
        "n_notvisual": 1,
        "n_no_box": 1,
        "n_unpredicted": 1,
    }
    per_phrase = result.per_phrase.set_index("phrase_id")
    assert list(per_phrase.index) == ["p1", "p2", "p5", "p6"]
    np.testing.assert_allclose(per_phrase["iou"].iloc[:3], [0.5, 25 / 175, 0.25])
    assert np.isnan(per_phrase.loc["p6", "iou"])
    assert per_phrase["correct"].tolist() == [True, False, False, False]
    assert per_phrase["chosen_region_id"].tolist() == ["1", "2", "1", None]
    per_type = result.per_type.set_index("phrase_type")
    # p5 counts toward both of its types; canonical type order.
    assert list(per_type.index) == ["people", "clothing", "animals", "vehicles", "scene"]
    assert per_type["accuracy"].tolist() == [100.0, 0.0, 0.0, 0.0, 0.0]
    assert per_type["upper_bound"].tolist() == [100.0, 0.0, 100.0, 100.0, 100.0]
    assert per_type["n_phrases"].tolist() == [1, 1, 1, 1, 1]


def test_the_threshold_moves_accuracy_and_upper_bound_together() -> None:
    phrases, proposals = tiny_example()
    chosen = pd.Series({"p1": 1, "p2": 2, "p5": 1, "p3": 0})
    # p1's choice has IoU 0.5 exactly; the best proposals reach 1.0 (p1), 0.5 (p5, p6).
    strict = evaluate_grounding(phrases, proposals, chosen_region=chosen, iou_threshold=0.6)
    assert strict.summary["accuracy"] == 0.0
    assert strict.summary["upper_bound"] == 25.0
    loose = evaluate_grounding(phrases, proposals, chosen_region=chosen, iou_threshold=0.2)
    assert loose.summary["accuracy"] == 50.0  # p1 and p5 (0.25)
    assert loose.per_phrase["correct"].tolist() == [True, False, True, False]


def test_chosen_boxes_and_errors() -> None:
    phrases, proposals = tiny_example()
    boxes = pd.DataFrame(
        [("p1", 0, 0, 10, 10), ("p2", 10, 10, 20, 15), ("p6", 1, 1, 3, 3)],
        columns=["phrase_id", "x1", "y1", "x2", "y2"],
    )
    result = evaluate_grounding(phrases, chosen_boxes=boxes)
    # p1 exact; p2 covers half (IoU 0.5); p6 overlaps 1 of 7; p5 unpredicted.
    assert result.summary["accuracy"] == 50.0
    assert result.summary["upper_bound"] is None
    np.testing.assert_allclose(result.per_phrase["iou"].iloc[[0, 1, 3]], [1.0, 0.5, 1 / 7])
    with pytest.raises(ValueError, match="not a proposal"):
        evaluate_grounding(phrases, proposals, chosen_region=pd.Series({"p1": 7}))
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_grounding(phrases, proposals)
    with pytest.raises(ValueError, match="lack columns"):
        evaluate_grounding(phrases.drop(columns="gt_x1"), chosen_boxes=boxes)


def run_grounding(tmp_path: Path, records: object, capsys) -> tuple[int, str, str]:
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(records))
    parser = argparse.ArgumentParser()
    eval_cli.add_eval_grounding_arguments(parser)
    args = parser.parse_args([str(predictions), "--annotations", str(SAMPLES), "--format", "json"])
    code = eval_cli.run_eval_grounding(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared Flickr30K Entities samples absent")
def test_eval_grounding_on_entities_samples(tmp_path: Path, capsys) -> None:
    # 100197432: chain 114 → (2,114,500,330), 115 → (248,201,392,290), 116 → (0,0,500,249);
    # 117 and 118 have no box; sentence 0 phrase 3 is notvisual. 9 phrases have a box.
    records = [
        {"image_id": "100197432", "caption_index": 0, "phrase_index": 0, "box": [2, 114, 500, 330]},
        {"image_id": "100197432", "sentence": 0, "phrase_index": 1, "box": [0, 0, 50, 50]},
        {"image_id": 100197432, "caption_index": 0, "phrase_index": 2, "box": [0, 0, 250, 249]},
        {"image_id": "100197432", "caption_index": 0, "phrase_index": 3, "box": [0, 0, 9, 9]},
        {"image_id": "100197432", "phrase_id": "100197432#2:0", "box": [2, 114, 500, 330]},
    ]
    code, out, _ = run_grounding(tmp_path, records, capsys)
    assert code == 0
    report = json.loads(out)
    summary = report["summary"]
    assert summary["n_phrases"] == 9
    assert summary["n_notvisual"] == 1
    assert summary["n_no_box"] == 2
    assert summary["n_unpredicted"] == 5
    assert summary["accuracy"] == pytest.approx(100 * 3 / 9)  # IoU 1, 0, exactly 0.5, 1
    assert summary["upper_bound"] is None
    per_type = {row["phrase_type"]: row for row in report["per_type"]}
    assert per_type["people"]["n_phrases"] == 5
    assert per_type["people"]["accuracy"] == pytest.approx(40.0)
    assert per_type["vehicles"]["accuracy"] == 0.0

    code, _, err = run_grounding(
        tmp_path,
        [{"image_id": "100197432", "phrase_id": "100197432#0:9", "box": [0, 0, 1, 1]}],
        capsys,
    )
    assert code == 2 and "100197432#0:9" in err
    code, _, err = run_grounding(tmp_path, [records[0], {"image_id": "1", "box": [0, 0]}], capsys)
    assert code == 2 and "record 1" in err
    code, _, err = run_grounding(tmp_path, [records[0], records[0]], capsys)
    assert code == 2 and "more than once" in err
