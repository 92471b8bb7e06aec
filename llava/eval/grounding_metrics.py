"""Where and when, scored as LLaVA-ST's evaluation scores them (github appletea233/LLaVA-ST,
inference/src/metrics.py), with one rule of this project's: a prediction the model wrote badly (no box, a
box or span whose end comes before its start, a value outside [0, 1]) is a miss, scored IoU 0 and
counted, never skipped and never a crash.

Boxes are `[x1, y1, x2, y2]` and spans `[start, end]`, normalised to [0, 1] of the picture or clip.
- A box's IoU is the area of the intersection over the area of the union (0 where the union is empty).
- A span's IoU is the length of the overlap over the length of the hull from the earlier start to the later
  end (LLaVA-ST's `temporal_iou`: the union's length wherever the spans meet; 0 where they do not). Two
  identical empty spans have IoU 1.
- REC (a box per referring expression): mIoU, and R1@0.5, the percentage of items with IoU >= 0.5.
- TVG (a span per sentence): mIoU, and R1@{0.3, 0.5, 0.7}, the percentages with IoU above each (strictly
  above, as LLaVA-ST counts TVG).
- STVG and SVG (a span, and a box per frame): tIoU, the span's IoU (STVG only); sIoU, the mean box IoU
  over the frames both have a box for; vIoU, the sum of those IoUs over the number of frames either has a
  box for; each averaged over items (m_tIoU, m_sIoU, m_vIoU) with R@{0.3, 0.5, 0.7} (IoU >= each).
"""

from __future__ import annotations

from collections.abc import Sequence

# A box or span as a model may write it (one rule, shared with the answers' reader and the web page).
from ..data.grounding_answers import well_formed

REC_THRESHOLDS = (0.5,)
TVG_THRESHOLDS = (0.3, 0.5, 0.7)
STVG_THRESHOLDS = (0.3, 0.5, 0.7)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def span_iou(a: Sequence[float], b: Sequence[float]) -> float:
    hull = max(a[1], b[1]) - min(a[0], b[0])
    if hull <= 0:
        return 1.0 if (a[0], a[1]) == (b[0], b[1]) else 0.0
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0])) / hull


def _iou_or_miss(prediction, truth, size: int, iou) -> tuple[float, bool]:
    if not well_formed(prediction, size):
        return 0.0, True
    return iou(prediction, truth), False


def _recalls(ious: list[float], thresholds, strictly: bool) -> dict[str, float]:
    n = max(len(ious), 1)
    return {f"R1@{t}": 100.0 * sum((v > t) if strictly else (v >= t) for v in ious) / n for t in thresholds}


def _pairwise_scores(predictions: list, truths: list, size: int, iou, thresholds, strictly: bool) -> dict:
    ious, misses = [], 0
    for prediction, truth in zip(predictions, truths, strict=True):
        value, missed = _iou_or_miss(prediction, truth, size, iou)
        ious.append(value)
        misses += missed
    mean = sum(ious) / max(len(ious), 1)
    return {"mIoU": mean, **_recalls(ious, thresholds, strictly), "n": len(ious), "misses": misses}


def rec_scores(predictions: list, truths: list) -> dict:
    """REC: a box (or None) per item against the true box."""
    return _pairwise_scores(predictions, truths, 4, box_iou, REC_THRESHOLDS, strictly=False)


def tvg_scores(predictions: list, truths: list) -> dict:
    """TVG: a span (or None) per item against the true span."""
    return _pairwise_scores(predictions, truths, 2, span_iou, TVG_THRESHOLDS, strictly=True)


def tube_ious(predicted: dict, truth: dict) -> tuple[float, float, int]:
    """(sIoU, vIoU, badly written boxes) of two {frame: box} tubes; a badly written predicted box is a
    frame with IoU 0 that still counts in the union."""
    both = set(predicted) & set(truth)
    total, bad = 0.0, 0
    for frame in both:
        value, missed = _iou_or_miss(predicted[frame], truth[frame], 4, box_iou)
        total += value
        bad += missed
    bad += sum(not well_formed(predicted[f], 4) for f in set(predicted) - both)
    return total / max(len(both), 1), total / max(len(set(predicted) | set(truth)), 1), bad


def stvg_scores(items: list[dict], with_span: bool = True) -> dict:
    """STVG (`with_span`) or SVG: each item's `pred_span`/`gt_span` (STVG) and `pred_boxes`/`gt_boxes`
    ({frame: box}; frames are any hashable key, the same for both)."""
    t_ious, s_ious, v_ious, misses = [], [], [], 0
    for item in items:
        if with_span:
            value, missed = _iou_or_miss(item.get("pred_span"), item["gt_span"], 2, span_iou)
            t_ious.append(value)
            misses += missed
        predicted = item.get("pred_boxes")
        if not isinstance(predicted, dict):
            predicted, misses = {}, misses + 1
        s_iou, v_iou, bad = tube_ious(predicted, item["gt_boxes"])
        s_ious.append(s_iou)
        v_ious.append(v_iou)
        misses += bad
    scores = {}
    for name, values in (("tIoU", t_ious), ("sIoU", s_ious), ("vIoU", v_ious)):
        if name == "tIoU" and not with_span:
            continue
        scores[f"m_{name}"] = sum(values) / max(len(values), 1)
        scores |= {f"{name}_{k}": v for k, v in _recalls(values, STVG_THRESHOLDS, strictly=False).items()}
    return scores | {"n": len(items), "misses": misses}
