"""Oracles for loss reduction, PPO/value losses, reward-model, DPO and SFT losses.

Includes the gradient-accumulation invariance (1×8 ≡ 8×1 ≡ 2 processes × 4) with real
gradients of a small model, and the zero policy gradient where the PPO clip is active.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.core import (
    aggregate_loss,
    dpo_loss,
    pairwise_loss,
    ppo_penalty_loss,
    ppo_policy_loss,
    ranking_loss,
    sft_loss,
    value_loss,
)

MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]


def _naive_aggregate(per_token, mask, mode):
    rows = [
        [per_token[i, j].item() for j in range(mask.shape[1]) if mask[i, j]]
        for i in range(mask.shape[0])
    ]
    if mode == "token_mean":
        return math.fsum(x for r in rows for x in r) / sum(len(r) for r in rows)
    if mode == "seq_mean_token_mean":
        return math.fsum(math.fsum(r) / max(1, len(r)) for r in rows) / len(rows)
    return math.fsum(math.fsum(r) for r in rows) / len(rows)


def _ragged_mask(b=8, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    return torch.arange(t)[None, :] < lengths[:, None]


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_loss_matches_naive_reduction(mode):
    mask = _ragged_mask()
    per_token = torch.where(mask, torch.randn(mask.shape, dtype=torch.float64), torch.nan)
    assert aggregate_loss(per_token, mask, mode).item() == pytest.approx(
        _naive_aggregate(per_token, mask, mode), rel=1e-12
    )


def test_aggregate_loss_rejects_unknown_mode_and_bad_shape():
    with pytest.raises(ValueError, match="unknown mode"):
        aggregate_loss(torch.zeros(2, 3), torch.ones(2, 3), "mean")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        aggregate_loss(torch.zeros(2, 3), torch.ones(2, 4), "token_mean")


def _model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    x = torch.randn(8, 6, 5, dtype=torch.float64)
    target = torch.randn(8, 6, dtype=torch.float64)
    return model, x, target, _ragged_mask(seed=seed)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", MODES)
def test_gradient_accumulation_1x8_equals_8x1_and_two_processes(mode):
    model, x, target, mask = _model_and_batch()
    n_tok, n_seq = mask.sum(), mask.shape[0]

    def per_token(rows):
        return (model(x[rows]).squeeze(-1) - target[rows]).square()

    model.zero_grad()
    aggregate_loss(per_token(slice(0, 8)), mask, mode).backward()
    big = _grads(model)

    # 8 micro-batches of one sequence, gradients summed, global counts passed in.
    model.zero_grad()
    for i in range(8):
        rows = slice(i, i + 1)
        aggregate_loss(
            per_token(rows), mask[rows], mode, num_tokens=n_tok, num_seqs=n_seq
        ).backward()
    for a, b in zip(big, _grads(model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

    # 2 processes × 2 micro-batches of 2; DDP averages the processes' gradients.
    world = 2
    per_process = []
    for p in range(world):
        model.zero_grad()
        for m in range(2):
            rows = slice(4 * p + 2 * m, 4 * p + 2 * m + 2)
            aggregate_loss(
                per_token(rows), mask[rows], mode, num_tokens=n_tok / world, num_seqs=n_seq / world
            ).backward()
        per_process.append(_grads(model))
    averaged = [sum(gs) / world for gs in zip(*per_process, strict=True)]
    for a, b in zip(big, averaged, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_per_microbatch_normalisation_would_differ():
    """Sanity check that the invariance test can fail: local token counts change the gradient."""
    model, x, target, mask = _model_and_batch()
    model.zero_grad()
    aggregate_loss((model(x).squeeze(-1) - target).square(), mask, "token_mean").backward()
    big = _grads(model)
    model.zero_grad()
    for i in range(8):
        loss = aggregate_loss(
            (model(x[i : i + 1]).squeeze(-1) - target[i : i + 1]).square(),
            mask[i : i + 1],
            "token_mean",
        )
        (loss / 8).backward()
    assert not torch.allclose(big[0], _grads(model)[0], rtol=1e-6)


def _ppo_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = _ragged_mask(4, 5, seed)
    old = torch.randn(4, 5, generator=g, dtype=torch.float64) - 2
    logprobs = old + 0.4 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(4, 5, generator=g, dtype=torch.float64)
    nan = torch.full_like(old, torch.nan)
    # garbage in padding must not matter
    return (
        torch.where(mask, logprobs, nan),
        torch.where(mask, old, nan),
        torch.where(mask, adv, nan),
        mask,
    )


def test_ppo_policy_loss_matches_naive_and_ignores_padding():
    logprobs, old, adv, mask = _ppo_inputs()
    eps = 0.2
    logprobs = logprobs.clone().requires_grad_(True)
    out = ppo_policy_loss(logprobs, old, adv, mask, eps)
    terms, clipped, kls, ratios = [], 0, [], []
    for i, j in mask.nonzero().tolist():
        r = math.exp(logprobs[i, j].item() - old[i, j].item())
        a = adv[i, j].item()
        unclipped_term, clipped_term = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
        terms.append(max(unclipped_term, clipped_term))
        clipped += clipped_term > unclipped_term
        kls.append(r - 1 - math.log(r))
        ratios.append(r)
    assert out.loss.item() == pytest.approx(math.fsum(terms) / len(terms), rel=1e-12)
    assert out.clipfrac.item() == pytest.approx(clipped / len(terms), rel=1e-12)
    assert 0 < clipped < len(terms)  # both regimes present in this batch
    assert out.approx_kl.item() == pytest.approx(math.fsum(kls) / len(kls), rel=1e-12)
    assert out.ratio_mean.item() == pytest.approx(math.fsum(ratios) / len(ratios), rel=1e-12)
    assert out.ratio_max.item() == pytest.approx(max(ratios), rel=1e-12)
    out.loss.backward()
    assert not torch.isnan(logprobs.grad).any()
    assert bool((logprobs.grad[~mask] == 0).all())


def test_zero_policy_gradient_where_clip_is_active():
    eps = 0.2
    old = torch.zeros(1, 6, dtype=torch.float64)
    # ratios: above 1+ε with A>0 (clipped), below 1−ε with A<0 (clipped), inside (not), and
    # outside-but-unclipped cases (above 1+ε with A<0, below 1−ε with A>0).
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.9, 1.5, 0.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 2.0, -3.0, -1.0, 1.0]], dtype=torch.float64)
    logprobs = ratio.log().requires_grad_(True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    out = ppo_policy_loss(logprobs, old, adv, mask, eps)
    out.loss.backward()
    # d/dlogp of −A·ρ/N is −A·ρ/N when unclipped.
    expected = torch.where(
        torch.tensor([[True, True, False, False, False, False]]), 0.0, -adv * ratio / 6
    )
    torch.testing.assert_close(logprobs.grad, expected, rtol=1e-14, atol=0)
    assert out.clipfrac.item() == pytest.approx(2 / 6)


def test_ppo_penalty_loss_matches_formula_and_gradient():
    logprobs, old, adv, mask = _ppo_inputs(1)
    beta = 0.3
    logprobs = logprobs.clone().requires_grad_(True)
    out = ppo_penalty_loss(logprobs, old, adv, mask, beta)
    terms, grads = [], {}
    n = int(mask.sum())
    for i, j in mask.nonzero().tolist():
        r = math.exp(logprobs[i, j].item() - old[i, j].item())
        a = adv[i, j].item()
        terms.append(-r * a + beta * (r - 1 - math.log(r)))
        grads[i, j] = (-r * a + beta * (r - 1)) / n  # d/dlogp, since dρ/dlogp = ρ
    assert out.loss.item() == pytest.approx(math.fsum(terms) / n, rel=1e-12)
    assert out.clipfrac.item() == 0.0
    out.loss.backward()
    for (i, j), gval in grads.items():
        assert logprobs.grad[i, j].item() == pytest.approx(gval, rel=1e-12)


@pytest.mark.parametrize("clip_eps", [None, 0.2])
def test_value_loss_matches_naive(clip_eps):
    g = torch.Generator().manual_seed(2)
    mask = _ragged_mask(4, 5, 2)
    old_v = torch.randn(4, 5, generator=g, dtype=torch.float64)
    values = (old_v + 0.5 * torch.randn(4, 5, generator=g, dtype=torch.float64)).requires_grad_(
        True
    )
    returns = torch.randn(4, 5, generator=g, dtype=torch.float64)
    nan = torch.full_like(old_v, torch.nan)
    out = value_loss(
        values, torch.where(mask, old_v, nan), torch.where(mask, returns, nan), mask, clip_eps
    )
    terms, clipped, errs = [], 0, []
    for i, j in mask.nonzero().tolist():
        v, vo, r = values[i, j].item(), old_v[i, j].item(), returns[i, j].item()
        e = (v - r) ** 2
        errs.append(e)
        if clip_eps is None:
            terms.append(0.5 * e)
        else:
            ce = (min(max(v, vo - clip_eps), vo + clip_eps) - r) ** 2
            terms.append(0.5 * max(e, ce))
            clipped += ce > e
    assert out.loss.item() == pytest.approx(math.fsum(terms) / len(terms), rel=1e-12)
    assert out.clipfrac.item() == pytest.approx(clipped / len(terms), rel=1e-12, abs=0)
    assert out.value_error.item() == pytest.approx(math.fsum(errs) / len(errs), rel=1e-12)
    if clip_eps is not None:
        assert 0 < clipped < len(terms)
    out.loss.backward()
    assert not torch.isnan(values.grad).any()


def test_pairwise_loss_closed_forms():
    chosen = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    rejected = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    expected = [
        -math.log(1 / (1 + math.exp(-(c - r))))
        for c, r in zip([1.0, 0.0, -2.0], [0.0, 0.0, 1.0], strict=True)
    ]
    out = pairwise_loss(chosen, rejected)
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-12)
    assert out.accuracy.item() == pytest.approx(1 / 3)
    assert out.score_gap.item() == pytest.approx(-2 / 3)
    assert pairwise_loss(torch.zeros(4), torch.zeros(4)).loss.item() == pytest.approx(
        math.log(2), rel=1e-6
    )
    margin = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    with_margin = [
        -math.log(1 / (1 + math.exp(-(c - r - m))))
        for c, r, m in zip([1.0, 0.0, -2.0], [0.0, 0.0, 1.0], [0.5, 1.0, 0.0], strict=True)
    ]
    assert pairwise_loss(chosen, rejected, margin).loss.item() == pytest.approx(
        sum(with_margin) / 3, rel=1e-12
    )
    # huge gaps must not underflow to inf
    assert math.isfinite(pairwise_loss(torch.tensor([-1e4]), torch.tensor([1e4])).loss.item())


def test_ranking_loss_is_mean_over_all_ordered_pairs():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 4, generator=g, dtype=torch.float64)
    terms, correct = [], 0
    for b in range(3):
        for i in range(4):
            for j in range(i + 1, 4):
                d = scores[b, i].item() - scores[b, j].item()
                terms.append(math.log1p(math.exp(-d)))
                correct += d > 0
    out = ranking_loss(scores)
    assert out.loss.item() == pytest.approx(math.fsum(terms) / 18, rel=1e-12)
    assert out.accuracy.item() == pytest.approx(correct / 18)
    two = ranking_loss(scores[:, :2])
    assert two.loss.item() == pytest.approx(
        pairwise_loss(scores[:, 0], scores[:, 1]).loss.item(), rel=1e-14
    )
    with pytest.raises(ValueError, match="K >= 2"):
        ranking_loss(torch.zeros(3, 1))


def test_dpo_loss_closed_forms():
    z = torch.zeros(5, dtype=torch.float64)
    eq = dpo_loss(z + 1, z - 3, z + 1, z - 3, beta=0.1)  # equal log-ratios
    assert eq.loss.item() == pytest.approx(math.log(2), rel=1e-14)
    assert eq.accuracy.item() == 0.0 and eq.margin.item() == 0.0
    pc = torch.tensor([-5.0, -2.0], dtype=torch.float64)
    pr = torch.tensor([-6.0, -1.0], dtype=torch.float64)
    rc = torch.tensor([-5.5, -2.0], dtype=torch.float64)
    rr = torch.tensor([-5.0, -1.5], dtype=torch.float64)
    beta, s = 0.5, 0.1
    h = [
        (a - c) - (b - d)
        for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True)
    ]
    logsig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    out = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=s)
    expected = [-(1 - s) * logsig(beta * x) - s * logsig(-beta * x) for x in h]
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * 0.5, 0.0], abs=1e-15)
    assert out.rejected_rewards.tolist() == pytest.approx([beta * -1.0, beta * 0.5], abs=1e-15)
    assert out.accuracy.item() == pytest.approx(0.5)
    ipo = dpo_loss(pc, pr, rc, rr, beta, loss_type="ipo")
    assert ipo.loss.item() == pytest.approx(
        sum((x - 1 / (2 * beta)) ** 2 for x in h) / 2, rel=1e-12
    )
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(pc, pr, rc, rr, beta, loss_type="hinge")


def test_sft_loss_is_token_mean_nll():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 9, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 9, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    out = sft_loss(logits, labels, mask)
    nll = [
        F.cross_entropy(logits[i, j][None], labels[i, j][None]).item()
        for i, j in mask.nonzero().tolist()
    ]
    assert out.loss.item() == pytest.approx(sum(nll) / 6, rel=1e-12)
    assert out.nll.item() == pytest.approx(sum(nll) / 6, rel=1e-12)
    assert int(out.num_tokens) == 6


def test_all_padding_batch_gives_zero_loss_and_zero_gradient():
    x = torch.full((2, 3), torch.nan, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for mode in MODES:
        loss = aggregate_loss(x * 1.0, mask, mode)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, x)
        assert bool((grad == 0).all())


def test_value_clipfrac_counts_no_rounding_ties_inside_the_band():
    """Inside the clip band the clipped value is V itself: old + (V − old) may differ from V by
    one rounding, which must not count as clipped (it made clipfrac differ between 1 and 2
    processes on identical rollouts)."""
    g = torch.Generator().manual_seed(0)
    # V and V_old of different magnitudes, |V − V_old| < 0.2: V − V_old is often inexact
    values = 0.01 * torch.randn(64, 16, generator=g)
    old_values = values + 0.05 * torch.randn(64, 16, generator=g).clamp(-3, 3)
    returns = torch.randn(64, 16, generator=g)
    mask = torch.ones(64, 16, dtype=torch.bool)
    out = value_loss(values, old_values, returns, mask, clip_eps=0.2)
    assert out.clipfrac.item() == 0.0
    assert out.loss.item() == pytest.approx(0.5 * float((values - returns).square().mean()))
