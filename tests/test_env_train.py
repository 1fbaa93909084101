"""PPO and GRPO on a two-turn scripted environment: one trainer step equals a hand-written step
in which the environment's tokens carry no loss; resume ≡ uninterrupted; a factory path that
does not import is one line before the run directory exists. Tiny models; seconds each."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from env_helpers import make_env_world
from safetensors.torch import load_file
from test_ppo import naive_clip_and_adam, naive_gae

import rlhfkit.algos.pg.trainer as pg_trainer
import rlhfkit.algos.ppo.trainer as ppo_trainer
from rlhfkit.algos.pg import PGConfig
from rlhfkit.algos.ppo import PPOConfig
from rlhfkit.core import shape_rewards
from rlhfkit.env import EnvError
from rlhfkit.rollout import with_turn_rewards


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_env_world(tmp_path_factory.mktemp("env_train"))


def config(cls, assets, out_dir, **overrides):
    data = dict(
        out_dir=str(out_dir),
        policy={"name_or_path": assets["policy"]},
        data={"train": assets["prompts"]},
        env="env_helpers:TwoTurn",
        env_args={"first": 0.25, "last": 1.0},
        episode={"max_turns": 2, "max_tokens": 48},
        rollout={"max_new_tokens": 8, "temperature": 1.0},
        iterations=1,
        ppo_epochs=1,
        sample_every=0,
        engine={"seed": 3, "threads": 1},
    )
    return cls.model_validate(data | overrides)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def per_row(mb, b, model_out):
    """(full context ids, response start, action positions) of row b."""
    mask = mb.attention_mask[b]
    ids = mb.input_ids[b][mask].tolist()
    start = int(mask[: mb.prompt_len].sum())
    action = mb.response_mask[b][mask[mb.prompt_len :]].nonzero().flatten().tolist()
    return ids, start, action


def naive_logprobs(policy, mb, temperature):
    """Per row: log-probs of the policy's tokens only, from one unpadded forward over the whole
    episode (the environment's tokens are context, never predicted)."""
    out = []
    for b in range(mb.input_ids.shape[0]):
        ids, start, action = per_row(mb, b, None)
        logits = policy(torch.tensor([ids])).logits[0] / temperature
        logp = torch.log_softmax(logits.float(), dim=-1)
        out.append(torch.stack([logp[start + t - 1, ids[start + t]] for t in action]))
    return out


def test_one_ppo_step_on_two_turn_episodes_equals_a_hand_written_step(assets, tmp_path):

    lr, eps, max_norm, gamma, lam, clip_eps = 1e-2, 1.0, 0.05, 0.97, 0.9, 0.2
    cfg = config(
        PPOConfig, assets, tmp_path / "ppo", rollout_batch_size=8, mini_batch_size=8,
        kl_coef=0.0, gamma=gamma, lam=lam, clip_eps=clip_eps,
        optim={"lr": lr, "eps": eps, "max_grad_norm": max_norm},
    )  # fmt: skip
    run = ppo_trainer.setup(cfg)
    index = run.state.prompts.next_batch(8)
    acc = run.engine.accelerator
    batch = run.collect(run.models, run.state.prompts, index, (3, 1), cfg.rollout, acc)
    mb = batch.experience
    assert sum(e["turns"] == 2 for e in batch.episodes) >= 3  # second turns are exercised
    policy0, critic0 = copy.deepcopy(run.models.policy), copy.deepcopy(run.models.critic)
    scores = ppo_trainer.adjusted_scores(run, mb)
    rewards = with_turn_rewards(
        shape_rewards(scores, mb.old_logprobs, mb.ref_logprobs, mb.response_mask, 0.0, "k1"), mb
    )
    adv, ret = ppo_trainer.advantages_and_returns(cfg, rewards, mb)
    ppo_trainer.update(run, mb, adv, ret, train_policy=True)
    after = state(run.models.policy)

    # by hand: rewards, values and GAE over the policy's tokens only (the environment's tokens
    # are skipped: no reward, no value, no discount), whitening over all policy tokens
    with torch.no_grad():
        old = naive_logprobs(policy0, mb, 1.0)
    adv_rows = []
    for b, ep in enumerate(batch.episodes):
        ids, start, action = per_row(mb, b, None)
        assert [p for p, _ in zip(action, old[b], strict=True)] == action
        torch.testing.assert_close(mb.old_logprobs[b][mb.response_mask[b]], old[b], atol=3e-5,
                                   rtol=0)  # fmt: skip
        with torch.no_grad():
            h = critic0.model.transformer(torch.tensor([ids])).last_hidden_state[0]
            v = critic0.model.score(h).squeeze(-1)
        values = [float(v[start + t - 1]) for t in action]
        ends = [k for k, t in enumerate(action) if ids[start + t] == 2]  # the turns' EOS
        r = [0.0] * len(action)
        for k, reward in zip(ends, ep["turn_rewards"], strict=False):
            r[k] += reward
        if len(ep["turn_rewards"]) > len(ends):  # a last turn cut by the budget: its last token
            r[-1] += ep["turn_rewards"][-1]
        adv_rows.append(naive_gae(r, values, gamma, lam))
        # the environment's tokens have no advantage
        assert not bool(adv[b][~mb.response_mask[b]].any())
    flat = [x for row in adv_rows for x in row]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / (len(flat) - 1) + 1e-8)
    white = [[(x - mean) / std for x in row] for row in adv_rows]
    for b in range(len(white)):
        got = adv[b][mb.response_mask[b]]
        torch.testing.assert_close(got, torch.tensor(white[b]), rtol=0, atol=2e-4)

    # the policy loss on the policy's tokens only; gradients by autograd; clip + AdamW by hand
    policy_n = copy.deepcopy(policy0)
    new = naive_logprobs(policy_n, mb, 1.0)
    n_tokens = sum(len(x) for x in new)
    pg = 0.0
    for b in range(len(new)):
        for t in range(len(new[b])):
            a = white[b][t]
            ratio = torch.exp(new[b][t] - old[b][t])
            pg = pg + torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))
    (pg / n_tokens).backward()
    grads = {k: q.grad for k, q in policy_n.named_parameters()}
    expected = naive_clip_and_adam(policy_n, grads, max_norm, lr, eps)
    for name, value in expected.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=2e-6, msg=name)


def test_one_grpo_step_on_two_turn_episodes_equals_a_hand_written_step(assets, tmp_path):
    lr, eps, max_norm, g = 1e-2, 1.0, 0.05, 4
    cfg = config(
        PGConfig, assets, tmp_path / "grpo", advantage="grpo", group_size=g,
        rollout_batch_size=2, mini_batch_size=8, kl_coef=0.0,
        loss_mode="seq_mean_token_mean", optim={"lr": lr, "eps": eps, "max_grad_norm": max_norm},
        env_args={"first": 0.25, "last": 1.0, "follow_up": "and then?"},
    )  # fmt: skip
    run = pg_trainer.setup(cfg)
    batch, _, _ = pg_trainer.sample_groups(run)
    mb = batch.experience
    policy0 = copy.deepcopy(run.models.policy)
    returns = torch.tensor([e["reward"] for e in batch.episodes])
    assert len(set(returns.tolist())) > 1  # informative groups
    adv = pg_trainer.advantages(cfg, mb, returns, 0.0)
    pg_trainer.update(run, mb, adv, pg_trainer.build_objective(cfg))
    after = state(run.models.policy)

    # by hand: GRPO's (R − mean_g)/(std_g + 1e-4) of each episode's return, on its policy tokens
    grouped = returns.view(-1, g)
    a_seq = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    a_seq = a_seq.flatten().tolist()
    with torch.no_grad():
        old = naive_logprobs(policy0, mb, 1.0)
    policy_n = copy.deepcopy(policy0)
    new = naive_logprobs(policy_n, mb, 1.0)
    loss = 0.0
    for b in range(len(new)):
        ratio = torch.exp(new[b] - old[b])
        per_token = torch.maximum(-a_seq[b] * ratio, -a_seq[b] * ratio.clamp(0.8, 1.2))
        loss = loss + per_token.mean()
    (loss / len(new)).backward()
    grads = {k: q.grad for k, q in policy_n.named_parameters()}
    expected = naive_clip_and_adam(policy_n, grads, max_norm, lr, eps)
    for name, value in expected.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=2e-6, msg=name)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_resume_after_a_stop_equals_an_uninterrupted_run(assets, tmp_path, algo):
    cls, trainer = (PPOConfig, ppo_trainer) if algo == "ppo" else (PGConfig, pg_trainer)
    extra = {"rollout_batch_size": 4, "mini_batch_size": 4, "iterations": 3}
    if algo == "grpo":
        extra.update(advantage="grpo", group_size=2, mini_batch_size=8)
    full = trainer.train(config(cls, assets, tmp_path / "full", **extra))
    stopped = config(cls, assets, tmp_path / "resumed", stop_after=1, **extra)
    assert trainer.train(stopped).status == "stopped"
    resumed = trainer.train(config(cls, assets, tmp_path / "resumed", **extra))
    assert "env/turns" in resumed.metrics and resumed.metrics["env/errors"] == 0.0
    a = load_file(full.policy_path / "model.safetensors")
    b = load_file(resumed.policy_path / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_factory_path_that_does_not_import_is_one_line_before_the_run_dir(assets, tmp_path):
    for path, match in (("no_such_module:Env", "env='no_such_module:Env': no module named"),
                        ("env_helpers:Nope", "has no attribute 'Nope'")):  # fmt: skip
        cfg = config(PGConfig, assets, tmp_path / "bad", env=path, advantage="grpo",
                     group_size=2, rollout_batch_size=2, mini_batch_size=4)  # fmt: skip
        with pytest.raises(EnvError, match=match):
            pg_trainer.setup(cfg)
        assert not (tmp_path / "bad").exists()
    cfg = config(PGConfig, assets, tmp_path / "bad", env_args={"colour": 1}, advantage="grpo",
                 group_size=2, rollout_batch_size=2, mini_batch_size=4)  # fmt: skip
    with pytest.raises(EnvError, match="unexpected keyword argument 'colour'"):
        pg_trainer.setup(cfg)
    cfg = config(PGConfig, assets, tmp_path / "bad", episode={"max_tokens": 4096},
                 advantage="grpo", group_size=2, rollout_batch_size=2, mini_batch_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="episode.max_tokens=4096 does not fit"):
        pg_trainer.setup(cfg)
    assert not (tmp_path / "bad").exists()


def test_grpo_on_the_guessing_game_logs_env_metrics_and_writes_transcripts(assets, tmp_path):
    game = tmp_path / "game.jsonl"
    rows = [{"prompt": "is it a cat?", "meta": {"secret": s}} for s in (1, 2, 3, 4, 5, 6)]
    game.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        PGConfig, assets, tmp_path / "game", env="rlhfkit.env.shipped:GuessingGame",
        env_args={"turn_cost": 0.1}, episode={"max_turns": 3, "max_tokens": 64},
        data={"train": str(game)}, eval_prompts=str(game), eval_size=4, advantage="grpo",
        group_size=2, rollout_batch_size=2, mini_batch_size=4, iterations=2,
    )  # fmt: skip
    result = pg_trainer.train(cfg)
    m = result.metrics
    assert 1.0 <= m["eval/env/turns"] <= 3.0 and m["eval/env/turns_ci"] >= 0.0
    assert 0.0 <= m["eval/env/success"] <= 1.0 and "eval/env/truncated" in m
    transcripts = (result.run_dir / "samples" / "eval_000002.jsonl").read_text().splitlines()
    first = json.loads(transcripts[0])
    assert len(transcripts) == 4 and first["messages"][0]["content"] == "is it a cat?"
    assert first["turns"] == sum(msg["role"] == "assistant" for msg in first["messages"])


def test_eval_env_writes_a_summary_and_transcripts(assets, tmp_path):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    game = tmp_path / "game.jsonl"
    game.write_text("".join(json.dumps({"prompt": "is it a cat?", "meta": {"secret": s}}) + "\n"
                            for s in (3, 4, 5)))  # fmt: skip
    args = ["eval", "env", "--policy", assets["policy"], "--prompts", str(game),
            "--env", "rlhfkit.env.shipped:GuessingGame", "--env-arg", "turn_cost=0.2",
            "--max-turns", "3", "--max-new-tokens", "6", "--out", str(tmp_path / "ev")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "env_summary.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "ev" / "transcripts.jsonl").open()]
    assert summary["episodes"] == 3 == len(rows)
    assert summary["turns"] == pytest.approx(sum(r["turns"] for r in rows) / 3)
    # every wrong guess cost 0.2, a found number pays 1
    for r in rows:
        assert r["reward"] == pytest.approx(-0.2 * r["turns"] + (1.2 if r["end"] == "done" else 0))
    bad = CliRunner().invoke(app, [*args[:7], "nope:X", *args[8:-1], str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "no module named 'nope'" in bad.output
    assert not (tmp_path / "bad").exists()


def test_the_rollout_function_escape_hatch_feeds_the_trainer(assets, tmp_path):
    import env_helpers

    cfg = config(PGConfig, assets, tmp_path / "hatch", advantage="grpo", group_size=2,
                 rollout_batch_size=2, mini_batch_size=4,
                 episode={"max_tokens": 48, "rollout_fn": "env_helpers:fixed_rollout"})  # fmt: skip
    run = pg_trainer.setup(cfg)
    env_helpers.CALLS.clear()
    batch, _, _ = pg_trainer.sample_groups(run)
    assert env_helpers.CALLS == [4]
    exp = batch.experience
    assert exp.response_mask.sum(1).tolist() == [1, 1, 1, 1]
    assert exp.old_logprobs[:, 0].tolist() == [-1.0] * 4  # the record's log-probs, as given
    assert [e["reward"] for e in batch.episodes] == exp.scores.tolist()
