"""What the study figure and the HTML report say about one image of an explanation.

Both list every label with its probability and threshold, and caption each overlay with its
class and probability; this module is their one home for those words.
"""

from __future__ import annotations

from chexviz.explain.explanation import Explanation


def check_index(explanation: Explanation, index: int) -> int:
    """``index`` as a position in the batch (negative counts from the end); IndexError if out."""
    if not -len(explanation) <= index < len(explanation):
        raise IndexError(f"index {index} is out of range for an explanation of {len(explanation)}")
    return index % len(explanation)


def prediction_rows(explanation: Explanation, index: int) -> list[tuple[str, float, float, bool]]:
    """(label, probability, threshold, predicted positive) for every model output."""
    probabilities = explanation.probabilities[index].tolist()
    thresholds = explanation.thresholds.tolist()
    return [
        (label, p, t, p >= t)
        for label, p, t in zip(explanation.labels, probabilities, thresholds, strict=True)
    ]


def overlay_caption(explanation: Explanation, index: int, cls: str) -> str:
    """The caption of a class's overlay: class, probability, and a note for an empty map."""
    probability = float(explanation.probabilities[index, explanation.labels.index(cls)])
    note = " · no positive evidence" if cls in explanation.zero_maps[index] else ""
    return f"{cls} ({100 * probability:.1f}%){note}"


def missed_caption(explanation: Explanation, index: int, cls: str) -> str:
    """The caption of a missed finding's map: what it is, and how far below threshold."""
    column = explanation.labels.index(cls)
    probability = float(explanation.probabilities[index, column])
    threshold = float(explanation.thresholds[column])
    note = " · no positive evidence" if cls in explanation.zero_maps[index] else ""
    return (
        f"missed: the model's map for {cls} "
        f"({100 * probability:.1f}% < threshold {100 * threshold:.1f}%){note}"
    )
