"""Oracles for token log-probabilities and entropy: the softmax definition in plain Python."""

import math

import pytest
import torch

from rlhfkit.core import entropy_from_logits, gather_logprobs


def _naive_logprob(row: list[float], i: int) -> float:
    z = math.fsum(math.exp(v) for v in row)
    return math.log(math.exp(row[i]) / z)


def test_gather_logprobs_matches_softmax_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 7, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, 7, (3, 4), generator=g)
    out = gather_logprobs(logits, ids)
    assert out.dtype == torch.float64 and out.shape == (3, 4)
    for b in range(3):
        for t in range(4):
            expected = _naive_logprob(logits[b, t].tolist(), int(ids[b, t]))
            assert out[b, t].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_gather_logprobs_upcasts_low_precision_to_float32():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 5, 300, generator=g) * 4).to(torch.bfloat16)
    ids = torch.randint(0, 300, (2, 5), generator=g)
    out = gather_logprobs(logits, ids)
    assert out.dtype == torch.float32
    # same bf16 values, exact float64 math: only float32 rounding separates them.
    reference = torch.log_softmax(logits.double(), -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(out.double(), reference, rtol=0, atol=1e-5)


def test_gather_logprobs_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="disagree"):
        gather_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_entropy_matches_definition_and_uniform_closed_form():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64) * 3
    out = entropy_from_logits(logits)
    for b in range(2):
        for t in range(3):
            row = logits[b, t].tolist()
            z = math.fsum(math.exp(v) for v in row)
            expected = -math.fsum(math.exp(v) / z * math.log(math.exp(v) / z) for v in row)
            assert out[b, t].item() == pytest.approx(expected, rel=1e-12)
    uniform = entropy_from_logits(torch.zeros(4, 50, dtype=torch.bfloat16))
    assert uniform.dtype == torch.float32
    torch.testing.assert_close(uniform, torch.full((4,), math.log(50.0)), rtol=0, atol=1e-6)
