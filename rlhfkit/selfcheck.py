"""`rlhfkit selfcheck`: the math core against closed forms, in a second, on any install.

A user who installs rlhfkit on a new machine (another torch build, another CPU or a GPU) runs
this to see that the formulas every trainer stands on still give their textbook values there.
The full oracle suite is in tests/test_core_*.py; these are the identities worth a glance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rlhfkit import core


def _gae_single_terminal_reward() -> float:
    # One reward r at the last of T tokens, zero values: A_t = (γλ)^(T−1−t) · r.
    T, r, gamma, lam = 6, 2.0, 0.9, 0.8
    rewards = torch.zeros(1, T, dtype=torch.float64)
    rewards[0, -1] = r
    adv, _ = core.gae(
        rewards, torch.zeros_like(rewards), torch.ones(1, T, dtype=torch.bool), gamma, lam
    )
    expected = torch.tensor(
        [[(gamma * lam) ** (T - 1 - t) * r for t in range(T)]], dtype=torch.float64
    )
    return (adv - expected).abs().max().item()


def _gae_lambda_one_is_return_minus_value() -> float:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 7, generator=g, dtype=torch.float64)
    values = torch.randn(3, 7, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    adv, _ = core.gae(rewards, values, mask, 0.95, 1.0)
    ret = core.discounted_returns(rewards, mask, 0.95)
    return (adv - (ret - values)).abs().max().item()


def _dpo_equal_ratios_is_log2() -> float:
    x = torch.tensor([-3.0, -1.5])
    out = core.dpo_loss(x, x, x, x, beta=0.1)
    return abs(out.loss.item() - math.log(2.0))


def _k3_zero_at_equality() -> float:
    lp = torch.tensor([-1.0, -2.0, -0.5])
    return core.kl_penalty(lp, lp, "k3").abs().max().item()


def _score_on_last_valid_token() -> float:
    # Left- and right-padded rows: the score lands on each row's last valid token only.
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    zeros = torch.zeros(2, 4)
    rewards = core.shape_rewards(torch.tensor([1.0, 2.0]), zeros, zeros, mask, kl_coef=0.1)
    expected = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    return (rewards - expected).abs().max().item()


def _pairwise_loss_closed_form() -> float:
    out = core.pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0]))
    return abs(out.loss.item() - math.log1p(math.exp(-1.0)))


CHECKS: dict[str, tuple[Callable[[], float], float]] = {
    "GAE, one terminal reward = (γλ)^k·r": (_gae_single_terminal_reward, 1e-12),
    "GAE with λ=1 = discounted return − value": (_gae_lambda_one_is_return_minus_value, 1e-12),
    "DPO loss with equal log-ratios = log 2": (_dpo_equal_ratios_is_log2, 1e-6),
    "k3 KL estimate = 0 when policies agree": (_k3_zero_at_equality, 0.0),
    "RM score on the last valid token (left/right pad)": (_score_on_last_valid_token, 0.0),
    "pairwise loss = log(1 + e^−Δ)": (_pairwise_loss_closed_form, 1e-6),
}


def run_selfcheck() -> bool:
    from rich.console import Console
    from rich.table import Table

    table = Table("identity", "error", "tolerance", "ok")
    ok_all = True
    for name, (fn, tol) in CHECKS.items():
        err = fn()
        ok = err <= tol
        ok_all &= ok
        table.add_row(name, f"{err:.2e}", f"{tol:.0e}", "✓" if ok else "✗ FAIL")
    console = Console()
    console.print(table)
    console.print(
        f"torch {torch.__version__}; {'all checks passed' if ok_all else 'SOME CHECKS FAILED'}"
    )
    return ok_all
