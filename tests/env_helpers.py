"""Scripted environments and a scripted engine for the environment tests."""

from __future__ import annotations

import torch

from rlhfkit.env import StepResult, record_messages
from rlhfkit.rollout import Rollout

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star", "yes", "no"]


class TwoTurn:
    """Turn 1: the user follows up ("and then?"), reward 0.25; turn 2: done, reward 1.0."""

    tools = None

    def __init__(self, follow_up: str = "and then?", first: float = 0.25, last: float = 1.0):
        self.follow_up, self.first, self.last, self.turn = follow_up, first, last, 0

    def reset(self, record):
        return record_messages(record)

    def step(self, message):
        self.turn += 1
        if self.turn == 1:
            return StepResult([{"role": "user", "content": self.follow_up}], self.first)
        return StepResult([], self.last, True, {"success": 1.0})


class Endless(TwoTurn):
    """Never says done (the turn cap must end it)."""

    def step(self, message):
        self.turn += 1
        return StepResult([{"role": "user", "content": "more"}], 0.1)


class Raising(TwoTurn):
    """Raises on its second step."""

    def step(self, message):
        self.turn += 1
        if self.turn == 2:
            raise RuntimeError("the simulator fell over")
        return StepResult([{"role": "user", "content": "go on"}], 0.5)


class ScriptedEngine:
    """Replies with fixed texts (canonical token ids + the end token), log-prob −1 per token:
    the ids are exactly what a template re-render writes."""

    name, exact, weights_version = "scripted", True, 0

    def __init__(self, tokenizer, replies=("yes.", "a cat sat.")):
        self.tok, self.replies, self.calls = tokenizer, list(replies), 0

    def generate(self, prompt_ids, prompt_mask, cfg, seeds, *, keep_logprobs=True):
        text = self.replies[self.calls % len(self.replies)]
        self.calls += 1
        ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        ids = ids[: cfg.max_new_tokens]
        n = prompt_ids.shape[0]
        response = torch.tensor([ids] * n)
        mask = torch.ones_like(response, dtype=torch.bool)
        return Rollout(prompt_ids, prompt_mask, response, mask, -torch.ones(response.shape),
                       ["stop" if ids[-1] == self.tok.eos_token_id else "length"] * n)  # fmt: skip

    def push_weights(self, weights, version):
        pass

    def close(self):
        pass


CALLS = []


def fixed_rollout(engine, tokenizer, make_env, records, seeds, rollout_cfg, cfg, **kwargs):
    """The escape hatch: any code that returns `Episode` records. Here: one sampled-looking
    token and a reward of 1 per episode, written by hand (no engine, no environment)."""
    from rlhfkit.env import Episode, render_ids

    CALLS.append(len(records))
    out = []
    for record, seed in zip(records, seeds.tolist(), strict=True):
        messages = [{"role": m.role, "content": m.content} for m in record.prompt]
        ep = Episode(
            record, seed, None, messages, None, render_ids(tokenizer, messages, None, True)
        )
        ep.ids, ep.action, ep.logprobs = [tokenizer.eos_token_id], [True], [-1.0]
        ep.rewards, ep.turns, ep.end = [(0, float(seed % 2))], 1, "done"
        ep.messages.append({"role": "assistant", "content": ""})  # an empty reply, then EOS
        out.append(ep)
    return out


def make_env_world(root):
    """A nano GPT-2 (head_dim 32: vLLM's CPU kernel runs it) on a tokenizer trained on short
    questions, whose EOS logit is raised so replies end within a few tokens, and 28 prompts."""
    import json

    import torch

    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim import train_tokenizer

    texts = [f"is it a {w}? it is a {w}, yes. no. and then?" for w in WORDS]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0).eval()
    ids = torch.tensor([tok("is it a cat? it is a dog, yes. no.")["input_ids"]])
    with torch.no_grad():  # raise the EOS logit: replies end within a few tokens (two turns)
        h = model.transformer(ids).last_hidden_state.mean(dim=(0, 1))
        model.lm_head.weight[tok.eos_token_id] += 4.5 * h / h.square().sum()
    policy = save_tiny_model(model, root / "policy", tok)
    rows = [{"prompt": f"is it a {w}?"} for w in WORDS] * 2
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"policy": str(policy), "prompts": str(root / "prompts.jsonl")}
