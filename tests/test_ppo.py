"""PPO trainer: one update against a naive hand-written PPO step, learning signal on a toy reward,
the adaptive KL controller inside the loop, critic warm-up, resume ≡ uninterrupted, LoRA, NaN
handling, presets. Tiny models built in code; each run takes seconds on one CPU core."""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import build_config, target_fraction
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

import rlhfkit.algos.ppo.trainer as ppo_trainer
from rlhfkit.algos.ppo import PPOConfig, train
from rlhfkit.config import load_config
from rlhfkit.engine.metrics import read_metrics


def make_cfg(assets: dict[str, str], out_dir: Path, **overrides) -> PPOConfig:
    data = dict(
        out_dir=str(out_dir),
        policy={"name_or_path": assets["policy"]},
        data={"train": assets["prompts"], "prompt_template": "raw"},
        rollout={"max_new_tokens": 6, "temperature": 1.0},
        iterations=2,
        rollout_batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        sample_every=0,
        engine={"seed": 3, "threads": 1},
    )
    return build_config(PPOConfig, data, **overrides)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- one update against a naive reference --------------------------------------------------------


def naive_policy_terms(policy, ids, mask, prompt_len, temperature):
    """Per-row unpadded HF forward: log-probs of the valid response tokens (a list per row)."""
    out = []
    for b in range(ids.shape[0]):
        prompt = ids[b, :prompt_len][mask[b, :prompt_len]].tolist()
        response = ids[b, prompt_len:][mask[b, prompt_len:]].tolist()
        logits = policy(torch.tensor([prompt + response])).logits[0] / temperature
        logp = torch.log_softmax(logits.float(), dim=-1)
        out.append(torch.stack([logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(response)]))
    return out


def naive_values(critic_hf, ids, mask, prompt_len):
    out = []
    for b in range(ids.shape[0]):
        prompt = ids[b, :prompt_len][mask[b, :prompt_len]].tolist()
        response = ids[b, prompt_len:][mask[b, prompt_len:]].tolist()
        h = critic_hf.transformer(torch.tensor([prompt + response])).last_hidden_state[0]
        v = critic_hf.score(h).squeeze(-1)
        out.append(v[len(prompt) - 1 : len(prompt) - 1 + len(response)])
    return out


def naive_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} − V_t, V after the end = 0 (definition)."""
    n = len(rewards)
    deltas = [
        rewards[t] + gamma * (values[t + 1] if t + 1 < n else 0.0) - values[t] for t in range(n)
    ]
    return [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n)) for t in range(n)]


def naive_clip_and_adam(model, grads, max_norm, lr, eps):
    """torch.nn.utils.clip_grad_norm_ then AdamW's first step (β-corrections cancel:
    m̂ = g, v̂ = g²): p ← p − lr·g/(|g| + eps)."""
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    coef = min(1.0, max_norm / (total + 1e-6))
    new = {}
    for name, p in model.named_parameters():
        g = grads[name].double() * coef
        new[name] = (p.detach().double() - lr * g / (g.abs() + eps)).float()
    return new


def test_one_ppo_update_equals_a_naive_hand_written_step(assets, tmp_path):
    from safetensors.torch import load_file

    from rlhfkit.core import shape_rewards
    from rlhfkit.rollout import collect_sharded

    lr, eps, max_norm, temperature = 1e-2, 1.0, 0.05, 0.9
    kl_coef, gamma, lam, clip_eps, vclip = 0.1, 0.97, 0.9, 0.2, 0.05
    overrides = dict(
        iterations=1,
        ppo_epochs=1,
        rollout_batch_size=8,
        mini_batch_size=8,
        ref_policy=assets["ref"],
        kl_coef=kl_coef,
        kl_estimator="k1",
        gamma=gamma,
        lam=lam,
        clip_eps=clip_eps,
        value_clip_eps=vclip,
        **{
            "optim.lr": lr,
            "optim.eps": eps,
            "optim.max_grad_norm": max_norm,
            "critic_optim.lr": lr,
            "critic_optim.eps": eps,
            "critic_optim.max_grad_norm": max_norm,
            "rollout.temperature": temperature,
            "rollout.max_new_tokens": 5,
        },
    )
    cfg = make_cfg(assets, tmp_path / "steps", **overrides)
    # steps 1-4 of one iteration through the trainer's own public functions
    run = ppo_trainer.setup(cfg, reward_fn=target_fraction)
    st = run.state
    index = st.prompts.next_batch(cfg.rollout_batch_size)
    key = (cfg.engine.seed, 1)  # iteration 1's sampling seeds, as `train` derives them
    acc = run.engine.accelerator
    mb = collect_sharded(run.models, st.prompts, index, key, cfg.rollout, acc).experience
    policy0, critic0 = copy.deepcopy(run.models.policy), copy.deepcopy(run.models.critic)
    scores_used = ppo_trainer.adjusted_scores(run, mb)
    rewards = shape_rewards(
        scores_used, mb.old_logprobs, mb.ref_logprobs, mb.response_mask, kl_coef, "k1"
    )
    adv, ret = ppo_trainer.advantages_and_returns(cfg, rewards, mb)
    ppo_trainer.update(run, mb, adv, ret, train_policy=True)
    captured = {
        "adv": adv,
        "ret": ret,
        "policy_after": state(run.models.policy),
        "critic_after": state(run.models.critic),
    }
    # `train` runs exactly these steps: its saved policy equals the one updated here
    result = train(make_cfg(assets, tmp_path / "train", **overrides), reward_fn=target_fraction)
    saved = load_file(result.policy_path / "model.safetensors")
    for name, value in saved.items():
        torch.testing.assert_close(value, captured["policy_after"][name], rtol=0, atol=0)

    ref = GPT2LMHeadModel.from_pretrained(assets["ref"]).eval()
    ids, mask, p = mb.input_ids, mb.attention_mask, mb.prompt_len
    tok = PreTrainedTokenizerFast.from_pretrained(assets["policy"])
    responses = tok.batch_decode(
        [ids[b, p:][mask[b, p:]].tolist() for b in range(ids.shape[0])], skip_special_tokens=True
    )
    scores = target_fraction([], responses)

    # 1. the rollout record: old/ref log-probs, values and scores by naive per-row forwards
    with torch.no_grad():
        old = naive_policy_terms(policy0, ids, mask, p, temperature)
        ref_lp = naive_policy_terms(ref, ids, mask, p, temperature)
        values = naive_values(critic0.model, ids, mask, p)
    rm = mb.response_mask
    for b in range(ids.shape[0]):
        n = int(rm[b].sum())
        torch.testing.assert_close(mb.old_logprobs[b, :n], old[b], rtol=0, atol=3e-5)
        torch.testing.assert_close(mb.ref_logprobs[b, :n], ref_lp[b], rtol=0, atol=3e-5)
        torch.testing.assert_close(mb.old_values[b, :n], values[b], rtol=0, atol=3e-5)
        assert mb.scores[b].item() == pytest.approx(scores[b], abs=1e-7)

    # 2. shaped rewards, GAE, returns and whitening, from their definitions
    adv_rows, ret_rows = [], []
    for b in range(ids.shape[0]):
        n = len(old[b])
        r = [-kl_coef * float(old[b][t] - ref_lp[b][t]) for t in range(n)]
        r[-1] += scores[b]
        v = [float(x) for x in values[b]]
        a = naive_gae(r, v, gamma, lam)
        adv_rows.append(a)
        ret_rows.append([a[t] + v[t] for t in range(n)])
    flat = [x for row in adv_rows for x in row]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)
    for b in range(ids.shape[0]):
        n = len(adv_rows[b])
        white = [(x - mean) / math.sqrt(var + 1e-8) for x in adv_rows[b]]
        torch.testing.assert_close(captured["adv"][b, :n], torch.tensor(white), rtol=0, atol=2e-4)
        torch.testing.assert_close(
            captured["ret"][b, :n], torch.tensor(ret_rows[b]), rtol=0, atol=2e-4
        )

    # 3. losses by explicit loops, gradients by autograd, clipping and the AdamW step by hand
    policy_n, critic_n = copy.deepcopy(policy0), copy.deepcopy(critic0)
    new_lp = naive_policy_terms(policy_n, ids, mask, p, temperature)
    new_v = naive_values(critic_n.model, ids, mask, p)
    n_tokens = sum(len(x) for x in new_lp)
    pg, vl = 0.0, 0.0
    for b in range(ids.shape[0]):
        for t in range(len(new_lp[b])):
            a = float(captured["adv"][b, t])
            ratio = torch.exp(new_lp[b][t] - old[b][t])
            pg = pg + torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))
            ret, v_old = float(captured["ret"][b, t]), float(values[b][t])
            v = new_v[b][t]
            v_clipped = v_old + (v - v_old).clamp(-vclip, vclip)
            vl = vl + 0.5 * torch.maximum((v - ret) ** 2, (v_clipped - ret) ** 2)
    (pg / n_tokens).backward()
    (vl / n_tokens).backward()
    grads_p = {k: q.grad for k, q in policy_n.named_parameters()}
    grads_c = {k: q.grad for k, q in critic_n.named_parameters()}
    expected_p = naive_clip_and_adam(policy_n, grads_p, max_norm, lr, eps)
    expected_c = naive_clip_and_adam(critic_n, grads_c, max_norm, lr, eps)
    moved = 0
    for name, value in expected_p.items():
        got = captured["policy_after"][name]
        torch.testing.assert_close(got, value, rtol=0, atol=2e-6, msg=f"policy {name}")
        moved += int(not torch.equal(got, dict(policy0.named_parameters())[name].detach()))
    for name, value in expected_c.items():
        torch.testing.assert_close(
            captured["critic_after"][name], value, rtol=0, atol=2e-6, msg=f"critic {name}"
        )
    assert moved == len(expected_p)  # every policy parameter received an update


@pytest.mark.parametrize("loss", ["clip", "pg"])
def test_policy_step_accumulating_8_micro_batches_equals_one_batch(assets, tmp_path, loss):
    """1 × 8 ≡ 8 × 1: the global normaliser makes accumulation exact (SGD, lr 1, no clipping,
    so the parameter change is the gradient itself), for the token- and sequence-level modes."""
    from rlhfkit.engine import Engine
    from rlhfkit.rollout import collect
    from rlhfkit.update import build_objective, policy_step

    cfg = make_cfg(
        assets, tmp_path / "acc", rollout_batch_size=8, mini_batch_size=8,
        policy_loss=loss, entropy_coef=0.01, ref_policy=assets["ref"], kl_loss_coef=0.1,
    )  # fmt: skip
    run = ppo_trainer.setup(cfg, reward_fn=target_fraction)
    st = run.state
    gen = torch.Generator().manual_seed(1)
    exp = collect(run.models, st.prompts, st.prompts.next_batch(8), gen, cfg.rollout)
    exp = exp.experience
    adv = torch.randn(exp.response_mask.shape, generator=torch.Generator().manual_seed(0))
    start = state(run.models.policy)
    acc = Engine(cfg.engine, tmp_path / "acc2", cfg).accelerator
    results = []
    for mode in ("token_mean", "seq_mean_token_mean"):
        for accum in (1, 8):
            run.models.policy.load_state_dict(start)
            objective = build_objective(cfg.model_copy(update={"loss_mode": mode}))
            sgd = torch.optim.SGD(run.models.policy.parameters(), lr=1.0)
            policy_step(
                acc, run.models.policy, sgd, None, exp, adv, objective,
                grad_accum_steps=accum, max_grad_norm=None, max_new_tokens=6,
                autocast=contextlib.nullcontext,
            )  # fmt: skip
            results.append(state(run.models.policy))
        for name, value in results[-2].items():
            torch.testing.assert_close(results[-1][name], value, rtol=1e-5, atol=1e-7)
        assert any(not torch.equal(results[-1][k], start[k]) for k in start)


# -- learning signal, KL control, warm-up ---------------------------------------------------------


def test_reward_rises_on_a_toy_reward_while_kl_stays_bounded(assets, tmp_path):
    cfg = make_cfg(
        assets,
        tmp_path / "run",
        iterations=30,
        rollout_batch_size=32,
        mini_batch_size=16,
        ppo_epochs=2,
        kl_coef=0.02,
        **{"optim.lr": 3e-3, "critic_optim.lr": 3e-3},
    )
    result = train(cfg, reward_fn=target_fraction)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "reward/score_mean" in r]
    first = rows[0]["reward/score_mean"]  # sampled before any update
    last = sum(r["reward/score_mean"] for r in rows[-5:]) / 5
    # random init: TARGET is ~1/16 of sampled tokens; PPO must push it well above that
    assert first < 0.15 and last > first + 0.2, (first, last)
    assert max(r["policy/kl_to_ref"] for r in rows) < 15.0
    assert result.status == "completed"
    assert (result.policy_path / "config.json").is_file()
    assert (result.policy_path / "tokenizer.json").is_file()


@pytest.mark.parametrize(("target", "direction"), [(1e-4, 1), (1e3, -1)])
def test_adaptive_kl_controller_moves_beta_toward_the_target(assets, tmp_path, target, direction):
    cfg = make_cfg(
        assets,
        tmp_path / "run",
        iterations=4,
        kl_control="adaptive",
        kl_coef=0.1,
        kl_target=target,
        kl_horizon=100,
        ref_policy=assets["ref"],  # KL to a different model
    )
    result = train(cfg, reward_fn=target_fraction)
    betas = [
        r["policy/kl_coef"]
        for r in read_metrics(result.run_dir / "metrics.jsonl")
        if "policy/kl_coef" in r
    ]
    assert len(betas) == 4 and betas[0] == pytest.approx(0.1)
    steps = [b1 - b0 for b0, b1 in zip(betas, betas[1:], strict=False)]
    # KL ≫ target: β grows by the clipped error 0.2·16/100 each time; KL ≪ target: it shrinks
    assert all(direction * s > 0 for s in steps), betas
    assert betas[1] == pytest.approx(0.1 * (1 + direction * 0.2 * 16 / 100), rel=1e-6)


def test_critic_warmup_updates_only_the_critic(assets, tmp_path):
    cfg = make_cfg(
        assets,
        tmp_path / "run",
        critic_warmup_iters=2,
        stop_after=2,
        **{"engine.checkpoint_every": 2},
    )
    result = train(cfg, reward_fn=target_fraction)
    assert result.status == "stopped" and result.iterations_done == 2
    before = GPT2LMHeadModel.from_pretrained(assets["policy"]).state_dict()
    after = GPT2LMHeadModel.from_pretrained(result.policy_path).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert all(r["critic/warmup"] == 1.0 for r in rows if "critic/warmup" in r)
    assert all("loss/value" in r and "loss/policy" not in r for r in rows if "critic/warmup" in r)


# -- reliability -----------------------------------------------------------------------------------


def test_resume_after_a_stop_equals_an_uninterrupted_run(assets, tmp_path):
    overrides = dict(
        iterations=4,
        ref_policy=assets["ref"],
        reward_normalize=True,
        kl_control="adaptive",
        kl_horizon=100,
        **{"engine.checkpoint_every": 1},
    )
    full = train(make_cfg(assets, tmp_path / "full", **overrides), reward_fn=target_fraction)
    first = train(
        make_cfg(assets, tmp_path / "split", stop_after=2, **overrides), reward_fn=target_fraction
    )
    assert first.status == "stopped" and first.iterations_done == 2
    resumed = train(make_cfg(assets, tmp_path / "split", **overrides), reward_fn=target_fraction)
    assert resumed.status == "completed" and resumed.iterations_done == 4
    for sub in ("policy", "critic"):
        from safetensors.torch import load_file

        a = load_file(full.run_dir / sub / "model.safetensors")
        b = load_file(resumed.run_dir / sub / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    rows_full = [r for r in read_metrics(full.run_dir / "metrics.jsonl") if r["step"] == 4]
    rows_res = [r for r in read_metrics(resumed.run_dir / "metrics.jsonl") if r["step"] == 4]
    for key in ("reward/score_mean", "policy/kl_coef", "policy/kl_to_ref", "loss/value"):
        assert rows_full[-1][key] == rows_res[-1][key], key


def test_nan_scores_skip_the_batch_or_stop_with_the_last_good_checkpoint(assets, tmp_path):
    calls = {"n": 0}

    def nan_on_second_call(prompts, responses):
        calls["n"] += 1
        scores = target_fraction(prompts, responses)
        return [float("nan")] * len(scores) if calls["n"] == 2 else scores

    cfg = make_cfg(assets, tmp_path / "skip", iterations=3, on_nan="skip")
    result = train(cfg, reward_fn=nan_on_second_call)
    assert result.status == "completed"
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("nan/skipped_batches") == 1] == [2]
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))

    calls["n"] = 0
    cfg = make_cfg(
        assets, tmp_path / "stop", iterations=3, on_nan="stop", **{"engine.checkpoint_every": 1}
    )
    result = train(cfg, reward_fn=nan_on_second_call)
    assert result.status == "stopped_on_nan" and result.iterations_done == 1
    latest = (result.run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_00000001"
    assert not result.policy_path.exists()


def test_lora_policy_trains_adapters_only_and_uses_disabled_adapters_as_reference(assets, tmp_path):
    cfg = make_cfg(
        assets,
        tmp_path / "run",
        iterations=2,
        kl_coef=0.1,
        **{
            "policy.lora": {
                "r": 4,
                "alpha": 8,
                "dropout": 0.0,
                "target_modules": ["c_attn", "c_fc"],
            }
        },
    )
    result = train(cfg, reward_fn=target_fraction)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "policy/kl_to_ref" in r]
    # iteration 1: LoRA B starts at 0, so the policy equals its reference exactly
    assert rows[0]["policy/kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["policy/kl_to_ref"] != pytest.approx(0.0, abs=1e-9)
    merged = GPT2LMHeadModel.from_pretrained(result.policy_path).state_dict()
    base = GPT2LMHeadModel.from_pretrained(assets["policy"]).state_dict()
    assert torch.equal(merged["transformer.wte.weight"], base["transformer.wte.weight"])
    assert not torch.equal(
        merged["transformer.h.0.attn.c_attn.weight"], base["transformer.h.0.attn.c_attn.weight"]
    )


def test_ptx_and_penalty_variants_run_and_log_their_losses(assets, tmp_path):
    sft = tmp_path / "sft.jsonl"
    sft.write_text(
        "".join(json.dumps({"prompt": "w3 w4", "response": "w7 w7"}) + "\n" for _ in range(8))
    )
    cfg = make_cfg(
        assets,
        tmp_path / "run",
        iterations=1,
        policy_loss="penalty",
        ptx_data=str(sft),
        ptx_coef=0.5,
        entropy_coef=0.01,
    )
    result = train(cfg, reward_fn=target_fraction)
    row = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/policy" in r][-1]
    assert math.isfinite(row["loss/ptx"]) and row["loss/ptx"] > 0
    assert row["policy/clipfrac"] == 0.0  # the penalty loss clips nothing


def test_presets_load_and_set_the_ppo_max_flags():
    cfg = load_config(PPOConfig, preset="ppo_max")
    assert cfg.reward_normalize and cfg.reward_clip is not None
    assert cfg.critic_warmup_iters > 0 and cfg.value_clip_eps is not None
    assert cfg.whiten_advantages and cfg.optim.max_grad_norm is not None
    assert cfg.kl_estimator in ("k1", "k2", "k3") and cfg.kl_coef > 0
    sim = load_config(PPOConfig, preset="ppo_sim")
    assert sim.engine.device == "cpu"


# -- monitoring --------------------------------------------------------------------------------------


def test_collapse_monitor_warns_only_when_reward_rises_with_abnormal_drift():
    from rlhfkit.rollout.monitor import CollapseMonitor

    def row(reward, length=10.0, ppl=20.0, kl=1.0, rep=0.0):
        return {
            "reward/score_mean": reward,
            "response/length_mean": length,
            "policy/perplexity": ppl,
            "policy/kl_to_ref": kl,
            "response/repetition": rep,
        }

    mon = CollapseMonitor(window=3)
    assert all(mon.check(row(0.0)) == [] for _ in range(3))
    assert mon.check(row(1.0, length=11.0)) == []  # reward up, nothing abnormal
    assert mon.check(row(-1.0, length=30.0)) == []  # drift, but the reward did not rise
    (warning,) = mon.check(row(1.0, length=30.0))
    assert "length moved from 10.0 to 30.0" in warning
    assert len(mon.check(row(1.0, ppl=5.0, kl=50.0, rep=0.9))) == 3


def test_console_throttle_shows_each_kind_once_per_ten_iterations():
    from rlhfkit.rollout.monitor import ConsoleThrottle

    throttle = ConsoleThrottle(every=10)
    kl = [i for i in range(40, 66) if throttle.show("kl", i)]  # fires 26 iterations running
    assert kl == [40, 50, 60]
    assert throttle.show("length", 41)  # another kind is shown on its own schedule
    assert throttle.show("kl", 70) and not throttle.show("kl", 79)
    assert throttle.hidden == 26 - 3 + 1


def test_repetition_fraction_and_explained_variance_match_definitions():
    from rlhfkit.rollout.monitor import explained_variance, repetition_fraction

    ids = torch.tensor(
        [[1, 2, 1, 2, 1, 2, 1, 2], [1, 2, 3, 4, 5, 6, 7, 8], [5, 5, 5, 0, 0, 0, 0, 0]]
    )
    mask = torch.tensor([[1] * 8, [1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    # row 0: trigrams (1,2,1),(2,1,2) repeated: 2 distinct of 6 → repetitive; row 1 distinct;
    # row 2 has < 4 tokens and is not counted
    assert repetition_fraction(ids, mask) == 0.5
    returns = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 9.0]])
    values = torch.tensor([[1.5, 2.0, 2.0], [4.0, 7.0, 9.9]])
    m = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    r = [1.0, 2.0, 3.0, 4.0, 9.0]
    e = [1.0 - 1.5, 0.0, 1.0, 0.0, 9.0 - 9.9]

    def var(x):
        mu = sum(x) / len(x)
        return sum((v - mu) ** 2 for v in x) / (len(x) - 1)

    assert explained_variance(values, returns, m) == pytest.approx(1 - var(e) / var(r), rel=1e-6)
