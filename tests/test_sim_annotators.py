"""Simulated annotators: Bradley–Terry / Plackett–Luce against closed forms and frequencies."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from rlhfkit.sim import (
    Annotator,
    annotator_agreement,
    calibrate_temperature,
    expected_agreement,
    gold_win_rate,
    make_annotators,
    simulate_preference,
)
from rlhfkit.sim.behaviours import PREFERENCE_MIX, sample_reply
from rlhfkit.sim.gold import judge_task
from rlhfkit.sim.world import Split, sample_task


def test_bradley_terry_closed_form():
    a = Annotator(temperature=0.5, length_bias=0.1)
    # u(a) = 1.0 + 0.1 * 2 = 1.2; u(b) = -1.0 + 0.1 * 3 = -0.7; p = 1 / (1 + exp(-(1.9 / 0.5)))
    p = a.p_first(1.0, "two words", -1.0, "three words here")
    assert p == pytest.approx(1 / (1 + math.exp(-3.8)), rel=1e-12)
    assert a.p_first(-1.0, "three words here", 1.0, "two words") == pytest.approx(1 - p, rel=1e-12)
    assert Annotator().p_first(0.3, "x", 0.3, "y") == 0.5
    # Extreme gaps must not overflow.
    assert Annotator(temperature=1e-3).p_first(-2.5, "a", 1.0, "b") == pytest.approx(
        0.0, abs=1e-300
    )
    with pytest.raises(ValueError, match="temperature"):
        Annotator(temperature=0.0)


def test_simulated_preference_frequency_matches_probability():
    prompt, good, bad = "What is 17 plus 25?", "17 plus 25 is 42.", "17 plus 25 is 43."
    annotator = Annotator(temperature=1.0)
    rng = random.Random(0)
    n = 20000
    wins = sum(
        simulate_preference(prompt, good, bad, annotator, rng).chosen == good for _ in range(n)
    )
    p = 1 / (1 + math.exp(-2.0))  # gold 1.0 vs -1.0 at temperature 1
    assert abs(wins / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    pref = simulate_preference(prompt, good, bad, annotator, random.Random(1))
    assert pref.p_first == pytest.approx(p)
    assert {pref.chosen_gold, pref.rejected_gold} == {1.0, -1.0}


def test_plackett_luce_top_choice_is_softmax():
    annotator = Annotator(temperature=0.7)
    golds, replies = [1.0, 0.0, -1.0], ["a", "b", "c"]
    rng = random.Random(0)
    n = 20000
    firsts = Counter(annotator.rank(golds, replies, rng)[0] for _ in range(n))
    z = [math.exp(g / 0.7) for g in golds]
    for i in range(3):
        p = z[i] / sum(z)
        assert abs(firsts[i] / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    # K = 2 is Bradley–Terry.
    pairs = Counter(annotator.rank([0.5, -0.5], ["a", "b"], rng)[0] for _ in range(n))
    p = annotator.p_first(0.5, "a", -0.5, "b")
    assert abs(pairs[0] / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert sorted(annotator.rank(golds, replies, rng)) == [0, 1, 2]


def test_expected_agreement_closed_form():
    pairs = [(1.0, "a", -1.0, "b"), (0.5, "a", 0.0, "b")]
    a1, a2 = Annotator(0.8, name="x"), Annotator(0.8, name="y")
    ps = [1 / (1 + math.exp(-2.0 / 0.8)), 1 / (1 + math.exp(-0.5 / 0.8))]
    expected = sum(p * p + (1 - p) * (1 - p) for p in ps) / 2
    assert expected_agreement(pairs, [a1, a2]) == pytest.approx(expected, rel=1e-12)


def _world_pairs(n: int, seed: int) -> list[tuple[float, str, float, str]]:
    split = Split.from_seed(seed)
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        task = sample_task(rng, split, held_out=False)
        b1, b2 = PREFERENCE_MIX.sample(task, rng), PREFERENCE_MIX.sample(task, rng)
        if b1 == b2:
            continue
        r1, r2 = sample_reply(task, b1, rng), sample_reply(task, b2, rng)
        out.append((judge_task(task, r1).score, r1, judge_task(task, r2).score, r2))
    return out


def test_measured_agreement_matches_expected_and_falls_with_temperature():
    pairs = _world_pairs(1500, seed=0)
    annotators = make_annotators(3, 0.65, 0.01, seed=0)
    measured = annotator_agreement(pairs, annotators, seed=0)
    expected = expected_agreement(pairs, annotators)
    # 4,500 (pair, annotator-pair) comparisons, correlated through shared labels: 0.02 is > 3 s.e.
    assert measured == pytest.approx(expected, abs=0.02)
    values = [
        expected_agreement(pairs, make_annotators(3, t, 0.01, 0)) for t in (0.1, 0.5, 1, 3, 30)
    ]
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(0.5, abs=0.01)


def test_calibration_hits_target_and_default_band():
    """The world's default: agreement 0.68 (inside 60–75 %), gold-preferred reply wins most, not all."""
    pairs = _world_pairs(800, seed=1)
    for target in (0.62, 0.68, 0.74):
        t = calibrate_temperature(pairs, target, n_annotators=3, length_bias_std=0.01, seed=1)
        annotators = make_annotators(3, t, 0.01, seed=1)
        assert expected_agreement(pairs, annotators) == pytest.approx(target, abs=1e-3)
    t = calibrate_temperature(pairs, 0.68, seed=1)
    annotators = make_annotators(3, t, 0.01, seed=1)
    assert 0.60 <= annotator_agreement(pairs, annotators, seed=1) <= 0.75
    win = gold_win_rate(pairs, annotators[0])
    assert 0.7 < win < 0.9
    with pytest.raises(ValueError, match="target agreement"):
        calibrate_temperature(pairs, 0.4)
