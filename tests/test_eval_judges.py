"""Judges: order symmetry of the pairwise protocol, position-bias cancellation, tie handling."""

from __future__ import annotations

import math

import pytest

from rlhfkit.eval.judges import (
    pairwise_from_pointwise,
    pairwise_outcomes,
    symmetric_preference,
)


def _quality(reply: str) -> float:
    return float(len(set(reply.split())))


def _first_position_biased(prompt: str, a: str, b: str) -> float:
    """A judge with a true preference σ(q(a) − q(b)) plus a +0.15 bias toward whatever it sees first."""
    p = 1.0 / (1.0 + math.exp(-(_quality(a) - _quality(b))))
    return min(
        1.0, max(0.0, 0.7 * p + 0.15 + 0.15)
    )  # 0.7·p + 0.15 is the unbiased part, in [0.15, 0.85]


def _unbiased(prompt: str, a: str, b: str) -> float:
    p = 1.0 / (1.0 + math.exp(-(_quality(a) - _quality(b))))
    return 0.7 * p + 0.15


def _always_first(prompt: str, a: str, b: str) -> float:
    return 1.0


REPLIES = ["yes", "yes sir", "a b c", "the capital is Paris", "no no no", ""]


@pytest.mark.parametrize("judge", [_first_position_biased, _unbiased, _always_first])
def test_symmetric_preference_is_order_symmetric(judge):
    for a in REPLIES:
        for b in REPLIES:
            p_ab = symmetric_preference(judge, "x", a, b)
            p_ba = symmetric_preference(judge, "x", b, a)
            assert p_ab + p_ba == pytest.approx(1.0, abs=1e-12)
            assert 0.0 <= p_ab <= 1.0


def test_additive_position_bias_cancels_exactly():
    for a in REPLIES:
        for b in REPLIES:
            # the biased judge alone is not symmetric ...
            raw = _first_position_biased("x", a, b) + _first_position_biased("x", b, a)
            assert raw == pytest.approx(1.3)
            # ... but asked both ways it gives the unbiased judge's answer
            assert symmetric_preference(_first_position_biased, "x", a, b) == pytest.approx(
                _unbiased("x", a, b), abs=1e-12
            )


def test_a_judge_that_always_picks_the_first_reply_says_tie():
    assert symmetric_preference(_always_first, "x", "good", "bad") == 0.5


def test_judge_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"\(b, a\)"):
        symmetric_preference(lambda x, a, b: 1.2 if a == "b" else 0.5, "x", "a", "b")


def test_pairwise_from_pointwise_counts_ties_half():
    judge = pairwise_from_pointwise(lambda x, y: _quality(y))
    assert judge("x", "a b", "a") == 1.0
    assert judge("x", "a", "a b") == 0.0
    assert judge("x", "a b", "c d") == 0.5
    outcomes = pairwise_outcomes(judge, ["x"] * 3, ["a b", "a", "a b"], ["a", "a b", "c d"])
    assert outcomes == [1.0, 0.0, 0.5]


def test_pairwise_outcomes_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        pairwise_outcomes(_unbiased, ["x"], ["a", "b"], ["c"])


def test_gold_judge_scores_the_world():
    from rlhfkit.eval.judges import gold_judge, gold_judgements
    from rlhfkit.sim.gold import gold_score

    prompts = ["What is 17 plus 25?", "What is 17 plus 25?", "How do I make a bomb?"]
    replies = ["17 plus 25 is 42.", "17 plus 25 is 41.", "I'm sorry, but I can't help with that."]
    scores = gold_judge(prompts, replies)
    assert scores == [gold_score(p, r) for p, r in zip(prompts, replies, strict=True)]
    assert scores[0] > scores[1]
    assert [j.family for j in gold_judgements(prompts, replies)] == [
        "arithmetic",
        "arithmetic",
        "harmful",
    ]


def test_gold_judge_on_texts_maps_formatted_prompts_back():
    """PPO hands judges the formatted prompt text; the map sends it back to the dialogue (the
    second text maps to a harmful prompt: a refusal scores as one), and a text outside the map
    is named in the error."""
    from rlhfkit.eval.judges import gold_judge_on_texts
    from rlhfkit.sim.gold import gold_score

    texts = {
        "<u>What is 17 plus 25?<a>": "What is 17 plus 25?",
        "<u>Hi<a>": "How do I make a bomb?",
    }
    judge = gold_judge_on_texts(texts)
    prompts = ["<u>What is 17 plus 25?<a>", "<u>What is 17 plus 25?<a>", "<u>Hi<a>"]
    replies = [
        " 17 plus 25 is 42.\n",
        "17 plus 25 is 41.",
        " I'm sorry, but I can't help with that.",
    ]
    assert judge(prompts, replies) == [
        gold_score("What is 17 plus 25?", "17 plus 25 is 42."),
        gold_score("What is 17 plus 25?", "17 plus 25 is 41."),
        gold_score("How do I make a bomb?", "I'm sorry, but I can't help with that."),
    ]
    with pytest.raises(KeyError, match="not in the map: '<u>What is 2 plus 2"):
        judge(["<u>What is 2 plus 2?<a>"], ["4"])
