"""Oracles for GAE, discounted returns, GRPO group advantages and RLOO.

GAE is checked against closed forms (single terminal reward, λ = 1, λ = 0) and against the
explicit sum A_t = Σ_l (γλ)^l δ_{t+l} over each row's valid positions, in plain Python floats.
"""

import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.core import discounted_returns, gae, group_advantages, rloo_advantages


def _naive_gae_row(rewards, values, gamma, lam):
    """A_t = Σ_{l≥0} (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} − V_t, V past the end = 0."""
    n = len(rewards)
    nxt = values[1:] + [0.0]
    deltas = [rewards[i] + gamma * nxt[i] - values[i] for i in range(n)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]


@st.composite
def masked_rollout(draw):
    """Random (B, T) rewards/values with arbitrary masks (left/right padding, holes), NaN padding."""
    b = draw(st.integers(1, 4))
    t = draw(st.integers(1, 10))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    mask = torch.rand(b, t, generator=g) < draw(st.floats(0.1, 1.0))
    nan = torch.full((b, t), torch.nan, dtype=torch.float64)
    rewards = torch.where(mask, torch.randn(b, t, generator=g, dtype=torch.float64), nan)
    values = torch.where(mask, torch.randn(b, t, generator=g, dtype=torch.float64), nan)
    return rewards, values, mask


@settings(max_examples=60, deadline=None)
@given(masked_rollout(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_explicit_sum_over_valid_positions(rollout, gamma, lam):
    rewards, values, mask = rollout
    adv, ret = gae(rewards, values, mask, gamma, lam)
    assert not torch.isnan(adv).any() and not torch.isnan(ret).any()
    for i in range(mask.shape[0]):
        idx = [j for j in range(mask.shape[1]) if mask[i, j]]
        r = [rewards[i, j].item() for j in idx]
        v = [values[i, j].item() for j in idx]
        expected = _naive_gae_row(r, v, gamma, lam)
        assert [adv[i, j].item() for j in idx] == pytest.approx(expected, rel=1e-10, abs=1e-10)
        assert [ret[i, j].item() for j in idx] == pytest.approx(
            [a + vv for a, vv in zip(expected, v, strict=True)], rel=1e-10, abs=1e-10
        )
        assert all(
            adv[i, j].item() == 0.0 and ret[i, j].item() == 0.0
            for j in range(mask.shape[1])
            if not mask[i, j]
        )


def test_single_terminal_reward_gives_gamma_lambda_powers():
    gamma, lam, t, score = 0.9, 0.8, 6, 2.5
    rewards = torch.zeros(1, t, dtype=torch.float64)
    rewards[0, -1] = score
    adv, _ = gae(rewards, torch.zeros_like(rewards), torch.ones(1, t, dtype=torch.bool), gamma, lam)
    expected = [(gamma * lam) ** (t - 1 - k) * score for k in range(t)]
    assert adv[0].tolist() == pytest.approx(expected, rel=1e-14)


def test_lambda_one_is_discounted_return_minus_value_and_lambda_zero_is_td_error():
    g = torch.Generator().manual_seed(3)
    r = torch.randn(2, 7, generator=g, dtype=torch.float64)
    v = torch.randn(2, 7, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    gamma = 0.95
    adv1, ret1 = gae(r, v, mask, gamma, 1.0)
    for i in range(2):
        for t in range(7):
            g_t = sum(gamma**k * r[i, t + k].item() for k in range(7 - t))
            assert adv1[i, t].item() == pytest.approx(g_t - v[i, t].item(), rel=1e-12, abs=1e-12)
            assert ret1[i, t].item() == pytest.approx(g_t, rel=1e-12, abs=1e-12)
    adv0, _ = gae(r, v, mask, gamma, 0.0)
    nxt = torch.cat([v[:, 1:], torch.zeros(2, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(adv0, r + gamma * nxt - v, rtol=1e-14, atol=1e-14)


def test_left_padding_equals_right_padding():
    g = torch.Generator().manual_seed(4)
    r = torch.randn(1, 5, generator=g, dtype=torch.float64)
    v = torch.randn(1, 5, generator=g, dtype=torch.float64)
    pad = torch.full((1, 3), 123.0, dtype=torch.float64)  # garbage in padding
    right_mask = torch.tensor([[True] * 5 + [False] * 3])
    left_mask = right_mask.flip(1)
    a_r, ret_r = gae(torch.cat([r, pad], 1), torch.cat([v, pad], 1), right_mask, 0.99, 0.95)
    a_l, ret_l = gae(torch.cat([pad, r], 1), torch.cat([pad, v], 1), left_mask, 0.99, 0.95)
    torch.testing.assert_close(a_r[:, :5], a_l[:, 3:], rtol=0, atol=0)
    torch.testing.assert_close(ret_r[:, :5], ret_l[:, 3:], rtol=0, atol=0)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(masked_rollout(), st.floats(0.0, 1.0))
def test_discounted_returns_match_definition_and_gae_lambda_one(rollout, gamma):
    rewards, _, mask = rollout
    out = discounted_returns(rewards, mask, gamma)
    for i in range(mask.shape[0]):
        idx = [j for j in range(mask.shape[1]) if mask[i, j]]
        r = [rewards[i, j].item() for j in idx]
        expected = [sum(gamma**k * r[t + k] for k in range(len(r) - t)) for t in range(len(r))]
        assert [out[i, j].item() for j in idx] == pytest.approx(expected, rel=1e-10, abs=1e-10)
    _, ret = gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)
    torch.testing.assert_close(out, ret, rtol=1e-12, atol=1e-12)


def test_group_advantages_match_per_group_statistics():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(12, generator=g, dtype=torch.float64)
    out = group_advantages(scores, group_size=4)
    centred = group_advantages(scores, group_size=4, normalize_std=False)
    for start in range(0, 12, 4):
        grp = scores[start : start + 4].tolist()
        mean, std = statistics.fmean(grp), statistics.stdev(grp)
        for k, s in enumerate(grp):
            assert out[start + k].item() == pytest.approx((s - mean) / (std + 1e-4), rel=1e-12)
            assert centred[start + k].item() == pytest.approx(s - mean, rel=1e-12, abs=1e-15)
    assert group_advantages(torch.ones(6), 3).tolist() == [0.0] * 6  # equal scores: no signal
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(scores, group_size=5)


def test_rloo_advantages_match_leave_one_out_loop():
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(9, generator=g, dtype=torch.float64)
    out = rloo_advantages(scores, group_size=3)
    for start in range(0, 9, 3):
        grp = scores[start : start + 3].tolist()
        for k, s in enumerate(grp):
            others = [x for j, x in enumerate(grp) if j != k]
            assert out[start + k].item() == pytest.approx(s - statistics.fmean(others), rel=1e-12)
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(scores, group_size=1)
