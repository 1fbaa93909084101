"""Environments under `accelerate launch --num_processes 2` (DDP over gloo, CPU): a GRPO run on
two-turn episodes equals the one-process run at the same global batch, within the online
trainers' tolerance (tests/test_distributed.py's docstring: the rollout's log-probs differ by
the padding's rounding; episodes are seeded by their global row, so the tokens are the same)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import (
    ONLINE_PARAM_TOL,
    assert_same_metrics,
    assert_same_models,
    launch,
    metric_rows,
    one_process,
    saved_models,
)
from test_env_train import assets  # noqa: F401  (the fixture)


def config(a, out, world: int) -> dict:
    return {
        "out_dir": str(out),
        "policy": {"name_or_path": a["policy"]},
        "data": {"train": a["prompts"]},
        "env": "env_helpers:TwoTurn",
        "env_args": {"first": 0.25, "last": 1.0},
        "episode": {"max_turns": 2, "max_tokens": 48},
        "rollout": {"max_new_tokens": 8, "temperature": 1.0},
        "advantage": "grpo",
        "iterations": 3,
        "ppo_epochs": 1,  # one optimiser step per rollout: every ratio is 1, none is clipped
        "rollout_batch_size": 4,
        "group_size": 4,
        "mini_batch_size": 16,
        "grad_accum_steps": 2 // world,
        "sample_every": 0,
        "optim": {"lr": 1e-3},
        "engine": {"seed": 3, "device": "cpu", "threads": 1, "checkpoint_every": 1},
    }


@pytest.mark.timeout(600)
def test_two_process_env_run_equals_one_process(assets, tmp_path):  # noqa: F811
    two = tmp_path / "grpo_env_w2"
    code = launch("grpo", config(assets, two, 2))
    assert code == 0, (tmp_path / "grpo_env_w2.log").read_text()[-3000:]
    one = tmp_path / "grpo_env_w1"
    one_process("grpo", config(assets, one, 1))
    a, b = saved_models(one, "grpo"), saved_models(two, "grpo")
    assert_same_models(a, b, **ONLINE_PARAM_TOL)
    base = load_file(str(assets["policy"]) + "/model.safetensors")
    assert [n for n in base if not torch.equal(base[n], a["policy/" + n])]  # it trained
    rows_one, rows_two = metric_rows(one), metric_rows(two)
    assert_same_metrics(rows_one, rows_two)
    assert all(r["env/turns"] > 1.0 for r in rows_two.values())  # second turns were played
    # the premise of the tolerance (test_distributed's docstring): no ratio reached the clip
    assert all(r["policy/clipfrac"] == 0.0 for r in rows_two.values())
