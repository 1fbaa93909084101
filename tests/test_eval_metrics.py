"""Response metrics and over-optimisation helpers against closed forms and naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.eval.metrics import (
    group_means,
    perplexity,
    refusal_rates,
    repetitive_share,
    sequence_kl,
    token_repetition,
    word_count,
    word_repetition,
)
from rlhfkit.eval.overopt import overoptimisation_curve


def test_sequence_kl_naive_loop_and_padding_leak():
    g = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(4, 7, generator=g) * 3
    ref = -torch.rand(4, 7, generator=g) * 3
    mask = torch.rand(4, 7, generator=g) > 0.3
    mask[:, 0] = True
    expected = [
        sum(float(logprobs[b, t] - ref[b, t]) for t in range(7) if mask[b, t]) for b in range(4)
    ]
    got = sequence_kl(logprobs, ref, mask)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    poisoned = logprobs.masked_fill(~mask, float("nan"))
    assert torch.equal(sequence_kl(poisoned, ref.masked_fill(~mask, float("inf")), mask), got)


def test_sequence_kl_is_the_true_kl_in_expectation():
    """Tokens drawn i.i.d. from a categorical π over 3 steps: E[Σ_t log π − log π_ref] = 3·KL(π‖π_ref)."""
    pi = torch.tensor([0.6, 0.3, 0.1])
    ref = torch.tensor([0.2, 0.5, 0.3])
    closed_form = 3 * float((pi * (pi / ref).log()).sum())
    g = torch.Generator().manual_seed(1)
    ids = torch.multinomial(pi, 200_000 * 3, replacement=True, generator=g).view(-1, 3)
    est = sequence_kl(pi.log()[ids], ref.log()[ids], torch.ones_like(ids, dtype=torch.bool))
    # standard error of the mean here is ~0.002
    assert float(est.mean()) == pytest.approx(closed_form, abs=0.01)


def test_sequence_kl_shape_check():
    with pytest.raises(ValueError, match="shapes differ"):
        sequence_kl(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))


def test_perplexity_of_uniform_is_vocab_size_and_matches_definition():
    v = 37
    lp = torch.full((3, 5), -math.log(v), dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    assert perplexity(lp, mask) == pytest.approx(v, rel=1e-12)
    g = torch.Generator().manual_seed(2)
    lp = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 4
    nll = [-float(lp[b, t]) for b in range(3) for t in range(5) if mask[b, t]]
    assert perplexity(lp.masked_fill(~mask, float("nan")), mask) == pytest.approx(
        math.exp(sum(nll) / len(nll)), rel=1e-12
    )
    with pytest.raises(ValueError, match="no valid token"):
        perplexity(lp, torch.zeros(3, 5, dtype=torch.bool))


def _naive_repetition(text: str, n: int) -> float:
    words = [w.strip(".,!?").lower() for w in text.split()]
    words = [w for w in words if w]
    seen, repeats, total = set(), 0, 0
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        total += 1
        repeats += gram in seen
        seen.add(gram)
    return repeats / total if total else 0.0


@pytest.mark.parametrize(
    "text",
    [
        "a b c a b c",
        "The cat. The cat. The cat.",
        "Paris is the capital of France.",
        "no no no no no no",
        "one two",
        "",
    ],
)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_word_repetition_matches_naive_definition(text, n):
    assert word_repetition(text, n) == pytest.approx(_naive_repetition(text, n), abs=1e-12)


def test_repetition_values():
    assert word_repetition("a b c a b c", 3) == pytest.approx(0.25)
    assert word_repetition("Paris is the capital of France.") == 0.0
    assert token_repetition([7, 8, 9, 7, 8, 9]) == pytest.approx(0.25)
    assert token_repetition([7, 8]) == 0.0


def test_repetitive_share_is_the_ppo_monitors_definition():
    """The PPO collapse monitor's "response/repetition" (`repetition_fraction`, token trigrams)
    and `repetitive_share` agree on random id batches with padding, so the monitor can call
    the one definition."""
    import torch

    from rlhfkit.rollout.monitor import repetition_fraction

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        ids = torch.randint(0, 4, (6, 10), generator=gen)
        lengths = torch.randint(0, 11, (6,), generator=gen)
        mask = torch.arange(10)[None, :] < lengths[:, None]
        seqs = [row[: int(n)].tolist() for row, n in zip(ids, lengths, strict=True)]
        assert repetitive_share(seqs) == repetition_fraction(ids, mask)
    assert word_count("I don't know, sorry.") == 4


def test_refusal_rates_split():
    harmful = [True, True, True, False, False, False, False]
    refused = [True, False, True, True, False, False, False]
    complied = [False, True, False, False, False, False, False]
    rates = refusal_rates(harmful, refused, complied)
    assert rates["harmful_refusal_rate"] == pytest.approx(2 / 3)
    assert rates["harmful_compliance_rate"] == pytest.approx(1 / 3)
    assert rates["over_refusal_rate"] == pytest.approx(1 / 4)
    assert (rates["n_harmful"], rates["n_other"]) == (3, 4)
    assert math.isnan(refusal_rates([False], [False], [False])["harmful_refusal_rate"])


def test_group_means():
    assert group_means(["a", "b", "a"], [1.0, 2.0, 4.0]) == {"a": 2.5, "b": 2.0}


def test_overoptimisation_curve_reads_eval_rows():
    rows = [
        {"step": 4, "eval/kl_to_ref": 4.0, "eval/rm_score": 2.0, "eval/gold": 0.1},
        {"step": 1, "loss/policy": 0.3},
        {"step": 0, "eval/kl_to_ref": -0.01, "eval/rm_score": 0.0, "eval/gold": 0.2},
        {"step": 2, "eval/kl_to_ref": 1.0, "eval/rm_score": 1.0, "eval/gold": 0.5},
        {"step": 3, "eval/kl_to_ref": "nan", "eval/rm_score": 1.0, "eval/gold": 0.5},
    ]
    curve = overoptimisation_curve(rows)
    assert curve.step == [0, 2, 4]
    assert curve.sqrt_kl == [0.0, 1.0, 2.0]
    assert curve.rm_change == 2.0
    assert curve.gold_change == pytest.approx(-0.1)
    assert curve.gold_peak_step == 2
