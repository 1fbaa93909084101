"""Oracles for KL estimators, reward shaping and the KL controllers."""

import math
from decimal import Decimal, localcontext

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.core import (
    AdaptiveKLController,
    FixedKLController,
    kl_penalty,
    last_valid_index,
    shape_rewards,
)


def test_estimators_match_their_formulas():
    lp = torch.tensor([-1.0, -2.5, -0.1, -3.0], dtype=torch.float64)
    ref = torch.tensor([-1.5, -2.0, -0.1, -0.2], dtype=torch.float64)
    for i in range(4):
        d = lp[i].item() - ref[i].item()
        assert kl_penalty(lp, ref, "k1")[i].item() == pytest.approx(d, rel=1e-14)
        assert kl_penalty(lp, ref, "k2")[i].item() == pytest.approx(0.5 * d * d, rel=1e-14)
        assert kl_penalty(lp, ref, "k3")[i].item() == pytest.approx(
            math.exp(-d) - 1 + d, rel=1e-12, abs=1e-300
        )
    with pytest.raises(ValueError, match="unknown estimator"):
        kl_penalty(lp, ref, "k4")


def test_k1_and_k3_are_unbiased_for_the_true_kl():
    # Expectation under π by exact enumeration of a categorical distribution.
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(11, generator=g, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(11, generator=g, dtype=torch.float64), -1)
    p = logp.exp().tolist()
    true_kl = math.fsum(
        pi * (a - b) for pi, a, b in zip(p, logp.tolist(), logq.tolist(), strict=True)
    )
    for est in ("k1", "k3"):
        expectation = (logp.exp() * kl_penalty(logp, logq, est)).sum().item()
        assert expectation == pytest.approx(true_kl, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_k3_nonnegative_zero_iff_equal(a, b):
    k3 = kl_penalty(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), "k3"
    )
    assert k3.item() >= 0.0
    if a == b:
        assert k3.item() == 0.0
    elif abs(a - b) > 1e-150:  # below that, d**2 / 2 underflows float64 to 0
        assert k3.item() > 0.0


@pytest.mark.parametrize("d", [1e-12, -3e-9, 2e-5, -7e-4, 9.9e-4, 1.01e-3, -0.3, 5.0])
def test_k3_is_accurate_for_small_and_large_differences(d):
    # exact oracle: exp(-d) - 1 + d in 60-digit decimal arithmetic.
    with localcontext() as ctx:
        ctx.prec = 60
        dd = Decimal(d)
        exact = float((-dd).exp() - 1 + dd)
    k3 = kl_penalty(
        torch.tensor(d, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), "k3"
    )
    assert k3.item() == pytest.approx(exact, rel=1e-13, abs=0)


def _naive_shaped(scores, lp, ref, mask, coef, est):
    b, t = mask.shape
    out = [[0.0] * t for _ in range(b)]
    for i in range(b):
        valid = [j for j in range(t) if mask[i, j]]
        for j in valid:
            d = lp[i, j].item() - ref[i, j].item()
            k = {"k1": d, "k2": 0.5 * d * d, "k3": math.exp(-d) - 1 + d}[est]
            out[i][j] = -coef * k
        out[i][valid[-1]] += scores[i].item()
    return out


@st.composite
def padded_batch(draw):
    """Rows of random lengths, each left- or right-padded, NaN in padding."""
    b = draw(st.integers(1, 5))
    t = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        n = draw(st.integers(1, t))
        if draw(st.booleans()):
            mask[i, t - n :] = True  # left padded
        else:
            mask[i, :n] = True  # right padded
    nan = torch.full((b, t), torch.nan, dtype=torch.float64)
    lp = torch.where(mask, torch.randn(b, t, generator=g, dtype=torch.float64), nan)
    ref = torch.where(mask, torch.randn(b, t, generator=g, dtype=torch.float64), nan)
    scores = torch.randn(b, generator=g, dtype=torch.float64)
    return scores, lp, ref, mask


@settings(max_examples=50, deadline=None)
@given(padded_batch(), st.sampled_from(["k1", "k2", "k3"]), st.floats(0.0, 1.0))
def test_shape_rewards_matches_naive_loop(batch, est, coef):
    scores, lp, ref, mask = batch
    out = shape_rewards(scores, lp, ref, mask, coef, est)
    assert out.tolist() == pytest.approx(
        [
            pytest.approx(r, rel=1e-12, abs=1e-12)
            for r in _naive_shaped(scores, lp, ref, mask, coef, est)
        ]
    )
    assert not torch.isnan(out).any()


@settings(max_examples=50, deadline=None)
@given(padded_batch())
def test_score_lands_only_on_last_valid_token(batch):
    scores, lp, ref, mask = batch
    scores = scores + 10.0  # nonzero
    out = shape_rewards(scores, lp, ref, mask, kl_coef=0.0)
    for i in range(mask.shape[0]):
        last = max(j for j in range(mask.shape[1]) if mask[i, j])
        expected = torch.zeros(mask.shape[1], dtype=torch.float64)
        expected[last] = scores[i]
        assert torch.equal(out[i], expected)


def test_last_valid_index_left_right_holes_and_empty():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]])
    assert last_valid_index(mask).tolist() == [1, 3, 2, 3]
    with pytest.raises(ValueError, match=r"rows \[1\] have no valid token"):
        last_valid_index(torch.tensor([[1, 0], [0, 0]]))


def test_shape_rewards_rejects_wrong_score_shape():
    with pytest.raises(ValueError, match="scores"):
        shape_rewards(torch.zeros(3), torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 4), 0.1)


def test_adaptive_kl_controller_follows_ziegler_rule():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    ctl.update(current_kl=7.5, n_steps=256)  # e = 0.25 → clipped to 0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000), rel=1e-15)
    before = ctl.value
    ctl.update(current_kl=5.4, n_steps=512)  # e = -0.1
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 512 / 10000), rel=1e-15)
    before = ctl.value
    ctl.update(current_kl=0.0, n_steps=100)  # e = -1 → clipped to -0.2
    assert ctl.value == pytest.approx(before * (1 - 0.2 * 100 / 10000), rel=1e-15)
    copy = AdaptiveKLController(1.0, 1.0, 1)
    copy.load_state_dict(ctl.state_dict())
    assert (copy.value, copy.target, copy.horizon) == (ctl.value, 6.0, 10000)
    with pytest.raises(ValueError, match="target > 0"):
        AdaptiveKLController(0.1, 0.0, 100)


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=10**6)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05
