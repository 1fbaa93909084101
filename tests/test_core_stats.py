"""Oracles for masked statistics, whitening and RunningMoments (plain-Python statistics)."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.core import RunningMoments, masked_mean, masked_sum, masked_var, whiten


@st.composite
def tensor_and_mask(draw, min_valid=2):
    """A (B, T) float64 tensor, a mask with at least `min_valid` True, NaN at masked positions."""
    b = draw(st.integers(1, 5))
    t = draw(st.integers(3, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, generator=g, dtype=torch.float64) * 3 + 1
    mask = torch.rand(b, t, generator=g) < draw(st.floats(0.2, 1.0))
    flat = mask.view(-1)
    flat[: min(min_valid, flat.numel())] = True
    x = torch.where(mask, x, torch.nan)
    return x, mask


def _valid(x, mask):
    return [float(v) for v, m in zip(x.view(-1), mask.view(-1), strict=True) if m]


@settings(max_examples=40, deadline=None)
@given(tensor_and_mask())
def test_masked_mean_sum_var_match_python_statistics(data):
    x, mask = data
    vals = _valid(x, mask)
    assert masked_sum(x, mask).item() == pytest.approx(math.fsum(vals), rel=1e-12, abs=1e-12)
    assert masked_mean(x, mask).item() == pytest.approx(
        statistics.fmean(vals), rel=1e-12, abs=1e-12
    )
    assert masked_var(x, mask).item() == pytest.approx(statistics.variance(vals), rel=1e-10)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(
        statistics.pvariance(vals), rel=1e-10, abs=1e-14
    )


def test_masked_mean_per_row_and_empty_row():
    x = torch.tensor([[1.0, 2.0, torch.nan], [torch.nan, torch.nan, torch.nan], [4.0, 0.0, 8.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]])
    assert masked_mean(x, mask, dim=1).tolist() == [1.5, 0.0, 6.0]
    assert masked_sum(x, mask, dim=1).tolist() == [3.0, 0.0, 12.0]


def test_masked_var_refuses_too_few_values():
    x = torch.tensor([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="at least 1"):
        masked_var(x, torch.tensor([[False, False]]), unbiased=False)


@settings(max_examples=40, deadline=None)
@given(tensor_and_mask(min_valid=3))
def test_whiten_matches_definition(data):
    x, mask = data
    vals = _valid(x, mask)
    mean, var = statistics.fmean(vals), statistics.variance(vals)
    out = whiten(x, mask, eps=0.0 if var > 1e-6 else 1e-8)
    expected = [(v - mean) / math.sqrt(var + (0.0 if var > 1e-6 else 1e-8)) for v in vals]
    assert _valid(out, mask) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert bool((out[~mask] == 0).all())
    kept = whiten(x, mask, shift_mean=False, eps=1e-8)
    assert _valid(kept, mask) == pytest.approx(
        [e * math.sqrt(var / (var + 1e-8)) + mean for e in expected], rel=1e-6, abs=1e-6
    )


def test_running_moments_merge_equals_concatenation():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, generator=g, dtype=torch.float64) * 2 + 5 for n in (1, 7, 30, 3)]
    allv = torch.cat(chunks).tolist()
    sequential = RunningMoments()
    for c in chunks:
        batch_mean, batch_std = sequential.update(c)
        assert batch_mean == pytest.approx(statistics.fmean(c.tolist()), rel=1e-12)
        assert batch_std == pytest.approx(statistics.stdev(c.tolist()) if len(c) > 1 else 0.0)
    # "processes": each sees two chunks, then one merges the other's state.
    a, b = RunningMoments(), RunningMoments()
    a.update(chunks[0]), a.update(chunks[2])
    b.update(chunks[1]), b.update(chunks[3])
    merged = a.merge(b)
    for rm in (sequential, merged):
        assert rm.count == len(allv)
        assert rm.mean == pytest.approx(statistics.fmean(allv), rel=1e-12)
        assert rm.var == pytest.approx(statistics.pvariance(allv), rel=1e-10)
        assert rm.std == pytest.approx(statistics.pstdev(allv), rel=1e-10)
    restored = RunningMoments()
    restored.load_state_dict(merged.state_dict())
    assert restored.state_dict() == merged.state_dict()


def test_running_moments_masked_update_and_bad_input():
    rm = RunningMoments()
    x = torch.tensor([[1.0, 2.0, torch.nan], [3.0, torch.nan, torch.nan]])
    mask = ~torch.isnan(x)
    rm.update(x, mask)
    assert (rm.count, rm.mean) == (3, 2.0)
    assert rm.var == pytest.approx(2.0 / 3.0, rel=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        rm.update(x)
    with pytest.raises(ValueError, match="no valid"):
        rm.update(x, torch.zeros_like(mask))
