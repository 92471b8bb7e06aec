"""Grounding metrics (llava.eval.grounding_metrics) on cases worked out by hand: boxes apart, identical and
overlapping; spans apart, touching and nested; badly written predictions counted as misses; the
thresholds as LLaVA-ST counts them; a spatio-temporal tube's sIoU and vIoU."""

import pytest

from llava.eval.grounding_metrics import box_iou, rec_scores, span_iou, stvg_scores, tvg_scores, well_formed


def test_box_iou_by_hand():
    assert box_iou([0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]) == 0.0  # apart
    assert box_iou([0.2, 0.2, 0.6, 0.6], [0.2, 0.2, 0.6, 0.6]) == pytest.approx(1.0)  # identical
    # 0.4 x 0.4 and a copy shifted 0.2 right: intersection 0.2 x 0.4 = 0.08, union 0.16 + 0.16 - 0.08 = 0.24
    assert box_iou([0.0, 0.0, 0.4, 0.4], [0.2, 0.0, 0.6, 0.4]) == pytest.approx(0.08 / 0.24)
    assert box_iou([0.0, 0.0, 0.2, 0.2], [0.2, 0.0, 0.4, 0.2]) == 0.0  # sharing an edge only
    assert box_iou([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3]) == 0.0  # empty union


def test_span_iou_by_hand():
    assert span_iou([0.0, 0.2], [0.5, 0.9]) == 0.0  # apart
    assert span_iou([0.0, 0.5], [0.5, 1.0]) == 0.0  # touching at one point
    assert span_iou([0.2, 0.6], [0.2, 0.6]) == pytest.approx(1.0)
    assert span_iou([0.0, 1.0], [0.25, 0.5]) == pytest.approx(0.25)  # nested: 0.25 over 1
    assert span_iou([0.0, 0.6], [0.4, 1.0]) == pytest.approx(0.2 / 1.0)  # overlap 0.2, hull 1.0
    assert span_iou([0.5, 0.5], [0.5, 0.5]) == 1.0 and span_iou([0.5, 0.5], [0.6, 0.6]) == 0.0


@pytest.mark.parametrize(
    "value, size, ok",
    [
        ([0.1, 0.2, 0.3, 0.4], 4, True),
        ([0.3, 0.2, 0.1, 0.4], 4, False),  # x2 before x1
        ([0.1, 0.2, 0.3, 1.2], 4, False),  # outside [0, 1]
        ([0.1, 0.2, 0.3], 4, False),
        (None, 4, False),
        (["a", 0.2], 2, False),
        ([0.4, 0.2], 2, False),  # ends before it starts
        ([0.2, float("nan")], 2, False),
    ],
)
def test_well_formed(value, size, ok):
    assert well_formed(value, size) is ok


def test_rec_counts_a_badly_written_box_as_a_miss():
    truths = [[0.0, 0.0, 0.4, 0.4]] * 4
    predictions = [[0.0, 0.0, 0.4, 0.4], [0.2, 0.0, 0.6, 0.4], None, [0.5, 0.5, 0.1, 0.1]]
    scores = rec_scores(predictions, truths)
    assert scores["mIoU"] == pytest.approx((1.0 + 1 / 3) / 4)
    assert scores["R1@0.5"] == 25.0 and scores["n"] == 4 and scores["misses"] == 2


def test_tvg_recall_is_strictly_above_each_threshold():
    truths = [[0.0, 1.0]] * 4
    predictions = [[0.0, 0.5], [0.0, 0.7], [0.0, 0.71], [0.9, 0.2]]  # IoU 0.5, 0.7, 0.71, a miss
    scores = tvg_scores(predictions, truths)
    assert scores["mIoU"] == pytest.approx((0.5 + 0.7 + 0.71) / 4)
    assert scores["R1@0.3"] == 75.0 and scores["R1@0.5"] == 50.0 and scores["R1@0.7"] == 25.0
    assert scores["misses"] == 1


def test_stvg_tube_by_hand():
    """Frames 0-3 truly boxed; the model boxes 1-4: frames 1 and 2 right, frame 3 half (1/3 IoU), frame 4
    has no true box. sIoU = (1 + 1 + 1/3) / 3 over the three shared frames; vIoU = the same sum over the
    five frames either boxes."""
    box, shifted = [0.0, 0.0, 0.4, 0.4], [0.2, 0.0, 0.6, 0.4]
    item = {
        "gt_span": [0.0, 0.75],
        "pred_span": [0.25, 1.0],
        "gt_boxes": {0: box, 1: box, 2: box, 3: box},
        "pred_boxes": {1: box, 2: box, 3: shifted, 4: box},
    }
    total = 1 + 1 + 1 / 3
    scores = stvg_scores([item])
    assert scores["m_tIoU"] == 0.5  # overlap 0.5 over the hull 1.0
    assert scores["m_sIoU"] == pytest.approx(total / 3) and scores["m_vIoU"] == pytest.approx(total / 5)
    assert scores["sIoU_R1@0.7"] == 100.0 and scores["vIoU_R1@0.5"] == 0.0 and scores["tIoU_R1@0.5"] == 100.0
    svg = stvg_scores([item | {"pred_boxes": {1: [0.9, 0.0, 0.1, 0.4]}}], with_span=False)
    assert "m_tIoU" not in svg and svg["m_sIoU"] == 0.0 and svg["misses"] == 1
    assert stvg_scores([{"gt_span": [0, 1], "gt_boxes": {0: box}, "pred_boxes": "garbage"}])["misses"] == 2
