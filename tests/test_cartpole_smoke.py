"""The CartPole textbook check: episodic GAE oracle and a short smoke run of the example.

The full run (200,000 steps × 3 seeds, see docs/cartpole.md) is a benchmark, not a test.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("gymnasium", reason="gymnasium is the optional 'examples' extra")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cartpole_ppo.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("cartpole_ppo", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _naive_episodic_gae(rewards, values, done, bootstrap, gamma, lam):
    """Per environment, backwards: next value V(s_{t+1}) is 0 after a termination, the
    bootstrap after a truncation or at the rollout's end, and the next step's value otherwise."""
    n_envs, n_steps = rewards.shape
    adv = [[0.0] * n_steps for _ in range(n_envs)]
    for e in range(n_envs):
        running = 0.0
        for t in reversed(range(n_steps)):
            last = bool(done[e, t]) or t == n_steps - 1
            next_value = bootstrap[e, t].item() if last else values[e, t + 1].item()
            carry = 0.0 if last else running
            delta = rewards[e, t].item() + gamma * next_value - values[e, t].item()
            running = delta + gamma * lam * carry
            adv[e][t] = running
    return adv


def test_episodic_gae_matches_per_env_recursion():
    cartpole = _load_example()
    g = torch.Generator().manual_seed(0)
    n_envs, n_steps = 3, 12
    rewards = torch.randn(n_envs, n_steps, generator=g, dtype=torch.float64)
    values = torch.randn(n_envs, n_steps, generator=g, dtype=torch.float64)
    done = torch.rand(n_envs, n_steps, generator=g) < 0.25
    done[0] = False  # one env whose episode spans the whole rollout
    done[1, -1] = True  # one whose episode ends exactly at the rollout's end
    # bootstrap values where a segment ends without terminating (truncation / rollout end);
    # zero where it terminated. Random here: the example fills it from the critic.
    open_end = torch.zeros_like(done)
    open_end[:, -1] = ~done[:, -1]
    truncated = done & (torch.rand(n_envs, n_steps, generator=g) < 0.5)
    bootstrap = torch.where(
        open_end | truncated, torch.randn(n_envs, n_steps, generator=g, dtype=torch.float64), 0.0
    )
    adv, ret = cartpole.episodic_gae(rewards, values, done, bootstrap, 0.9, 0.8)
    expected = _naive_episodic_gae(rewards, values, done, bootstrap, 0.9, 0.8)
    assert adv.tolist() == pytest.approx(
        [pytest.approx(row, rel=1e-12, abs=1e-12) for row in expected]
    )
    torch.testing.assert_close(ret, adv + values, rtol=1e-12, atol=1e-12)


def test_cartpole_example_runs_briefly():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--seed", "0", "--total-steps", "4096", "--num-envs", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seed"] == 0 and result["steps"] == 4096
    assert result["episodes"] > 0 and result["final_mean_return"] > 0
    assert "steps_to_475" in result and result["wall_s"] > 0
