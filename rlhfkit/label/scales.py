"""Rating scales and the rule that turns a rating into a KTO label, with no dependencies, so
the simulated annotators (`rlhfkit.sim.ratings`) label exactly as the app's export does.

- Scales: thumbs (0 down, 1 up), Likert 1–5 and 1–7.
- The rule (`label_rule`): thumbs up is desirable, down undesirable. A Likert score above the
  scale's middle is desirable, below it undesirable, and the middle itself (3 of 1–5, 4 of 1–7)
  is dropped: it says neither, and KTO learns from each row's sign. With a threshold t, a score
  ≥ t is desirable and every other undesirable, none dropped.
"""

from __future__ import annotations

from collections.abc import Callable

SCALES = {"thumbs": (0, 1), "1-5": (1, 5), "1-7": (1, 7)}  # lowest and highest score
THUMBS = {"down": 0, "up": 1}


def label_rule(
    scale: str, threshold: int | None = None
) -> tuple[Callable[[int], bool | None], str]:
    """(score → True / False / None (dropped), the rule in words); ValueError names a bad
    threshold."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale == "thumbs":
        if threshold is not None:
            raise ValueError("threshold: a thumbs aspect needs none (up is desirable)")
        return (lambda score: score == THUMBS["up"]), "thumbs up = true, down = false"
    lo, hi = SCALES[scale]
    if threshold is None:
        middle = (lo + hi) / 2
        rule = f"score > {middle:g} = true, score < {middle:g} = false, {middle:g} dropped"
        return (lambda score: None if score == middle else score > middle), rule
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not lo < threshold <= hi:
        raise ValueError(f"threshold: a score {lo + 1}–{hi} on the {scale} scale")
    return (lambda score: score >= threshold), f"score >= {threshold} = true, else false"
