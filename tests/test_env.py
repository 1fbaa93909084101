"""Environments: tool schemas and parsers, the tool environment, and the multi-turn driver
(incremental ids ≡ a full re-render, action mask exactly on sampled tokens, per-turn reward
positions, limits, faults, seeds). Scripted environments; the local engine on a tiny model."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import pytest
import torch
from env_helpers import WORDS, Endless, Raising, ScriptedEngine, TwoTurn

from rlhfkit.env import (
    EnvError,
    EpisodeConfig,
    HermesParser,
    ParseError,
    SimpleParser,
    ToolEnvironment,
    check_episode,
    episode_metrics,
    episodes_rollout,
    render_ids,
    run_episodes,
    tool_schema,
)
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rollout import LocalEngine, RolloutConfig, response_logprobs
from rlhfkit.sim import train_tokenizer
from rlhfkit.types import Message, PromptRecord, user

CHATML = (
    "{% for m in messages %}<|user|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|user|>assistant\n{% endif %}"
)  # ChatML's shape (text after the end token) with the sim tokenizer's special tokens
# rewrites earlier assistant turns (as reasoning templates drop past thoughts): not prefix-preserving
REWRITING = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
    "<|assistant|>…<|eos|>{% else %}{{ '<|' + m['role'] + '|>' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    texts = [f"is it a {w}? it is a {w}, yes. no. and then? more. go on." for w in WORDS]
    return train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def policy(tok):
    """A random tiny GPT-2 whose EOS logit is raised (~4.5 nats above the mean), so sampled
    replies end within a few tokens and episodes reach their second turn."""
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0).eval()
    ids = torch.tensor([tok("is it a cat? it is a dog, yes. no.")["input_ids"]])
    with torch.no_grad():
        h = model.transformer(ids).last_hidden_state.mean(dim=(0, 1))
        model.lm_head.weight[tok.eos_token_id] += 4.5 * h / h.square().sum()
    return model


def records(n: int = 3) -> list[PromptRecord]:
    return [PromptRecord(user(f"is it a {WORDS[i % len(WORDS)]}?")) for i in range(n)]


# -- tools ----------------------------------------------------------------------------------------


def test_tool_schema_from_signature_and_docstring():
    def convert(amount: float, unit: Literal["m", "km"], precise: bool = False) -> str:
        """Convert a distance.

        More text that is not the description.

        Args:
            amount: how far,
                in the given unit.
            unit (str): the unit.
            precise: keep all digits.

        Returns:
            the distance in metres.
        """

    assert tool_schema(convert) == {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert a distance.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "description": "how far, in the given unit."},
                    "unit": {"type": "string", "enum": ["m", "km"], "description": "the unit."},
                    "precise": {"type": "boolean", "description": "keep all digits."},
                },
                "required": ["amount", "unit"],
            },
        },
    }


def calc(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: digits and + - *.
    """
    if not set(expression) <= set("0123456789+-* "):
        raise ValueError("only digits and + - *")
    return str(eval(expression))  # the test's own tool; the shipped one parses


def test_parsers():
    tools = {"calc": calc}
    hermes = HermesParser()
    text = 'Let me see. <tool_call>{"name": "calc", "arguments": {"expression": "2+3"}}</tool_call>'
    assert [(c.name, c.arguments) for c in hermes.parse(text, tools)] == [
        ("calc", {"expression": "2+3"})
    ]
    two = '<tool_call>{"name": "calc", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>' * 2
    assert len(hermes.parse(two, tools)) == 2
    assert hermes.parse("The answer is 5.", tools) == []
    with pytest.raises(ParseError, match="not valid JSON"):
        hermes.parse('<tool_call>{"name": "calc", </tool_call>', tools)
    with pytest.raises(ParseError, match="name"):
        hermes.parse("<tool_call>[1, 2]</tool_call>", tools)
    simple = SimpleParser()
    assert [(c.name, c.arguments) for c in simple.parse(" calc(347 + 589) ", tools)] == [
        ("calc", {"expression": "347 + 589"})
    ]
    assert simple.parse("347 plus 589 is 936.", tools) == []
    with pytest.raises(ParseError):
        simple.parse("calc(347 + 589) and more", tools)
    assert simple.parse("other(1)", tools)[0].name == "other"


def test_tool_environment_runs_calls_and_scores_the_answer():
    record = PromptRecord(user("What is 2 plus 3?"), meta={"answer": "5"})
    env = ToolEnvironment(
        [calc], SimpleParser(), lambda rec, text: float(rec.meta["answer"] in text),
        call_cost=0.1, tool_role="user",
    )  # fmt: skip
    assert env.reset(record) == [{"role": "user", "content": "What is 2 plus 3?"}]
    assert env.tools[0]["function"]["name"] == "calc"
    r = env.step({"role": "assistant", "content": "calc(2 + 3)"})
    assert (r.messages, r.reward, r.done) == ([{"role": "user", "content": "5"}], -0.1, False)
    assert r.info == {"tool_calls": 1, "invalid_calls": 0, "tool_errors": 0}
    r = env.step({"role": "assistant", "content": "calc(2 / 3)"})  # the tool raises
    assert r.messages[0]["content"] == "error: ValueError: only digits and + - *"
    assert r.info["tool_errors"] == 1 and not r.done
    r = env.step({"role": "assistant", "content": "calc(2 + 3) then"})  # malformed: parser's error
    assert r.messages[0]["content"].startswith("error: a tool call is") and r.info == {
        "invalid_calls": 1
    }
    r = env.step({"role": "assistant", "content": "nope(1)"})
    assert (
        r.messages[0]["content"] == "error: no tool named 'nope'" and r.info["invalid_calls"] == 1
    )
    r = env.step({"role": "assistant", "content": "2 plus 3 is 5."})
    assert (r.messages, r.reward, r.done, r.info) == ([], 1.0, True, {"success": 1.0})


# -- the driver -----------------------------------------------------------------------------------


def run(tok, engine, make_env, recs, cfg=None, max_new_tokens=8, seed=0):
    seeds = torch.arange(len(recs)) + 1000 * seed
    rollout_cfg = RolloutConfig(max_new_tokens=max_new_tokens)
    return run_episodes(engine, tok, make_env, recs, seeds, rollout_cfg, cfg or EpisodeConfig())


@pytest.mark.parametrize("template", ["sim", "chatml"])
def test_incremental_ids_equal_a_full_rerender(tok, template):
    tok = tok if template == "sim" else _with_template(tok, CHATML)
    episodes = run(tok, ScriptedEngine(tok), TwoTurn, records(2))
    for ep in episodes:
        assert ep.end == "done" and ep.turns == 2 and not ep.template_fallback
        full = render_ids(tok, ep.messages, None, False)
        # the episode stops at the policy's last end token; the template may write more after it
        assert ep.prompt_ids + ep.ids == full[: len(ep.prompt_ids) + len(ep.ids)]
        assert len(full) - len(ep.prompt_ids) - len(ep.ids) == (0 if template == "sim" else 1)
        assert check_episode(tok, ep)


def test_a_special_token_sampled_inside_a_turn_passes_the_rerender_check(tok):
    """The environment reads a reply without the special tokens in it (here `<|user|>`, sampled
    mid-reply, as a barely trained policy does), the ids keep them: the check compares the
    rest. A reply whose ids spell other text still fails it."""
    engine = ScriptedEngine(tok, ["yes.<|user|> no.", "a cat sat."])
    (ep,) = run(tok, engine, TwoTurn, records(1))
    special = tok.convert_tokens_to_ids("<|user|>")
    first_turn = ep.ids[: ep.rewards[0][0]]
    assert special in first_turn and ep.messages[1]["content"] == "yes. no."
    assert check_episode(tok, ep)
    sampled = [i for i, a in enumerate(ep.action) if a and ep.ids[i] not in tok.all_special_ids]
    ep.ids[sampled[0]] = tok.convert_tokens_to_ids("no")  # other text than the message's
    assert not check_episode(tok, ep)


def _with_template(tok, template):
    import copy

    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def test_a_template_that_is_not_prefix_preserving_uses_the_fallback(tok):
    rewriting = _with_template(tok, REWRITING)
    (ep,) = run(rewriting, ScriptedEngine(rewriting), TwoTurn, records(1))
    assert ep.template_fallback and ep.end == "done"
    env_span = [t for t, a in zip(ep.ids, ep.action, strict=True) if not a]
    assert rewriting.decode(env_span) == "<|user|>and then?<|assistant|>"


def test_action_mask_is_exactly_on_sampled_tokens(tok, policy):
    engine = LocalEngine(policy, tok)
    episodes = run(tok, engine, TwoTurn, records(6), max_new_tokens=8)
    rollout, action, turn_rewards = episodes_rollout(episodes, tok.pad_token_id)
    with torch.no_grad():
        full, _ = response_logprobs(policy, rollout.input_ids, rollout.attention_mask,
                                    rollout.prompt_len)  # fmt: skip
    for i, ep in enumerate(episodes):
        n = len(ep.ids)
        # the recorded log-probs are the policy's at exactly the action positions, 0 elsewhere
        lp = torch.tensor(ep.logprobs)
        act = torch.tensor(ep.action)
        torch.testing.assert_close(lp[act], full[i, :n][act], rtol=0, atol=2e-5)
        assert bool((lp[~act] == 0).all())
        # the non-action spans are the environment's messages, as the template writes them
        spans, cur = [], []
        for t, a in zip(ep.ids, ep.action, strict=True):
            if not a:
                cur.append(t)
            elif cur:
                spans.append(cur)
                cur = []
        if ep.end == "done":
            assert [tok.decode(s) for s in spans] == ["<|user|>and then?<|assistant|>"]
            # the sampled spans are the replies the environment read, each ending at EOS
            replies = [m["content"] for m in ep.messages if m["role"] == "assistant"]
            assert tok.decode(ep.ids, skip_special_tokens=True) == "and then?".join(replies)
        assert action[i, :n].tolist() == ep.action and not action[i, n:].any()
    assert sum(ep.end == "done" for ep in episodes) >= 2  # the test reaches second turns


def test_per_turn_rewards_sit_on_each_turns_last_sampled_token(tok):
    episodes = run(tok, ScriptedEngine(tok, ["yes.", "no."]), TwoTurn, records(2))
    _, action, turn_rewards = episodes_rollout(episodes, tok.pad_token_id)
    eos = tok.eos_token_id
    for i, ep in enumerate(episodes):
        ends = [p for p, t in enumerate(ep.ids) if t == eos and ep.action[p]]
        assert [p for p, _ in ep.rewards] == ends and len(ends) == 2
        assert [r for _, r in ep.rewards] == [0.25, 1.0] and ep.reward == 1.25
        # the earlier turn's reward in turn_rewards; the last turn's is the score
        expected = torch.zeros(turn_rewards.shape[1])
        expected[ends[0]] = 0.25
        assert torch.equal(turn_rewards[i], expected)
        assert ends[1] == max(p for p, a in enumerate(ep.action) if a)


def test_turn_cap_token_budget_and_masking_truncated_episodes(tok):
    (ep,) = run(tok, ScriptedEngine(tok), Endless, records(1), EpisodeConfig(max_turns=3))
    assert ep.end == "turn_cap" and ep.turns == 3 and ep.truncated
    assert ep.ids[-1] == tok.eos_token_id  # ends with the policy's last turn
    cfg = EpisodeConfig(max_turns=3, truncation_penalty=1.0)
    (pen,) = run(tok, ScriptedEngine(tok), Endless, records(1), cfg)
    assert [r for _, r in pen.rewards] == [0.1, 0.1, 0.1 - 1.0] and pen.ids == ep.ids
    cfg = EpisodeConfig(max_turns=4, max_tokens=20)
    (ep,) = run(tok, ScriptedEngine(tok), Endless, records(1), cfg)
    assert ep.end == "token_budget" and len(ep.prompt_ids) + len(ep.ids) <= 20
    for mask_truncated in (False, True):
        _, action, _ = episodes_rollout([ep], tok.pad_token_id, mask_truncated)
        assert bool(action.any()) != mask_truncated  # truncation zeroes the mask when asked
    (ep,) = run(tok, ScriptedEngine(tok, ["a cat sat on the mat."]), TwoTurn, records(1),
                max_new_tokens=3)  # fmt: skip
    assert ep.end == "length" and ep.turns == 1 and ep.ids[-1] != tok.eos_token_id


def test_environment_failures_end_the_episode_and_are_counted(tok):
    class ResetFails(TwoTurn):
        def reset(self, record):
            raise KeyError("no such record")

    episodes = run(tok, ScriptedEngine(tok), Raising, records(2))
    assert [e.end for e in episodes] == ["error", "error"]
    assert episodes[0].errors == ["step 1: RuntimeError: the simulator fell over"]
    assert episodes[0].reward == 0.5 and episodes[0].turns == 2
    (bad,) = run(tok, ScriptedEngine(tok), ResetFails, records(1))
    assert bad.end == "error" and bad.ids == [] and "reset: KeyError" in bad.errors[0]
    rollout, action, _ = episodes_rollout([bad, *episodes], tok.pad_token_id)
    assert not action[0].any()
    summaries = [e.summary() for e in [bad, *episodes]]
    assert episode_metrics(summaries, 1.0)["env/errors"] == 3.0
    with pytest.raises(EnvError, match="3 of 3 episodes ended in an environment error"):
        episode_metrics(summaries, 0.5)


def test_an_episode_samples_the_same_whatever_shares_its_batch(tok, policy):
    engine = LocalEngine(policy, tok)
    recs = records(3)
    seeds = torch.tensor([11, 12, 13])
    cfg, rollout_cfg = EpisodeConfig(), RolloutConfig(max_new_tokens=6)
    together = run_episodes(engine, tok, TwoTurn, recs, seeds, rollout_cfg, cfg)
    alone = run_episodes(engine, tok, TwoTurn, recs[2:], seeds[2:], rollout_cfg, cfg)
    assert together[2].ids == alone[0].ids  # the log-probs: up to the batch's padding's rounding
    torch.testing.assert_close(together[2].logprobs, alone[0].logprobs, rtol=0, atol=1e-5)
    again = run_episodes(engine, tok, TwoTurn, recs, seeds, rollout_cfg, cfg)
    assert [e.ids for e in again] == [e.ids for e in together]
    other = run_episodes(engine, tok, TwoTurn, recs, seeds + 1, rollout_cfg, cfg)
    assert [e.ids for e in other] != [e.ids for e in together]


# -- shipped environments -----------------------------------------------------------------------


def test_calculator_tool_and_environment():
    from rlhfkit.env.shipped import calc, calculator, exact_answer

    assert calc("347 + 589") == "936" and calc("9 minus 4 times 2") == "1"
    assert calc("(2 + 3) * 4") == "20" and calc("-7 + 2") == "-5"
    with pytest.raises(ValueError, match="cannot evaluate"):
        calc("__import__('os')")
    with pytest.raises(ValueError, match="cannot evaluate"):
        calc("2 ** 99999")
    record = PromptRecord(user("What is 347 plus 589?"), meta={"answer": 936})
    env = calculator(call_cost=0.05)
    env.reset(record)
    r = env.step({"role": "assistant", "content": "calc(347 + 589)"})
    assert r.messages == [{"role": "user", "content": "= 936"}] and r.reward == -0.05
    r = env.step({"role": "assistant", "content": "347 plus 589 is 936."})
    assert (r.reward, r.done, r.info["success"]) == (1.0, True, 1.0)
    assert exact_answer(record, "It is 935.") == 0.0
    hermes = calculator(parser="hermes", tool_role="tool")
    assert hermes.tools[0]["function"]["parameters"]["required"] == ["expression"]
    assert hermes.tools[0]["function"]["name"] == "calc"


def test_guessing_game_per_turn_feedback(tok):
    from rlhfkit.env.shipped import GuessingGame

    game = GuessingGame(turn_cost=0.1)
    game.reset(PromptRecord(user("Guess my number from 1 to 16."), meta={"secret": 11}))
    steps = [game.step({"role": "assistant", "content": t}) for t in ("8", "hmm", "13", "11")]
    assert [s.messages[0]["content"] if s.messages else None for s in steps] == [
        "Higher.", "Say a number.", "Lower.", None
    ]  # fmt: skip
    assert [s.reward for s in steps] == [-0.1, -0.1, -0.1, 1.0] and steps[-1].done
    assert steps[1].info["invalid_calls"] == 1


def test_guessing_game_information_bonus_per_turn_and_its_positions(tok):
    """Secret 11 in 1…16, info_bonus 0.5: the consistent set I goes 16 → 8 ("8": Higher) → 8
    (a repeat) → 8 ("20" is outside I) → 8 (no number) → 3 ("12": Lower, I = 9…11) → 1 (found);
    each turn earns 0.5 · log2(|I_before| / |I_after|) on top of −0.1 (or +1 when found), on the
    last sampled token of its turn, and the bonuses sum to 0.5 · log2(16) = 2."""
    from rlhfkit.env.shipped import GuessingGame

    guesses = ["8", "8", "20", "hmm", "12", "11"]
    bits = [1.0, 0.0, 0.0, 0.0, math.log2(8 / 3), math.log2(3)]
    expected = [-0.1 + 0.5 * b for b in bits[:-1]] + [1.0 + 0.5 * bits[-1]]
    record = PromptRecord(user("Guess my number from 1 to 16."), meta={"secret": 11})
    cfg = EpisodeConfig(max_turns=6, max_tokens=200)
    (ep,) = run(tok, ScriptedEngine(tok, guesses), lambda: GuessingGame(0.1, 0.5), [record], cfg)
    assert ep.end == "done" and ep.turns == 6 and ep.invalid_calls == 1
    ends = [p for p, t in enumerate(ep.ids) if t == tok.eos_token_id and ep.action[p]]
    assert [p for p, _ in ep.rewards] == ends and len(ends) == 6
    assert [r for _, r in ep.rewards] == pytest.approx(expected, abs=1e-12)
    assert ep.reward - (1.0 - 5 * 0.1) == pytest.approx(2.0, abs=1e-12)  # 0.5 · log2 16 bits
    # info_bonus 0 is the plain game, bit for bit
    (plain,) = run(tok, ScriptedEngine(tok, guesses), lambda: GuessingGame(0.1), [record], cfg)
    assert [r for _, r in plain.rewards] == [-0.1] * 5 + [1.0]
    with pytest.raises(ValueError, match="low"):
        GuessingGame(low=5, high=4)


def test_simulated_user_asks_its_follow_up_and_the_gold_scorer_judges_the_dialogue():
    from rlhfkit.sim.envs import SimulatedUser

    opener, canned, question = "My name is Ann.", "Nice to meet you, Ann.", "What is my name?"
    turns = (("user", opener), ("assistant", canned), ("user", question))
    record = PromptRecord(tuple(Message(r, c) for r, c in turns))
    env = SimulatedUser()
    assert env.reset(record) == [{"role": "user", "content": opener}]
    r = env.step({"role": "assistant", "content": "Hello Ann!"})
    assert (r.messages, r.reward, r.done) == ([{"role": "user", "content": question}], 0.0, False)
    good = env.step({"role": "assistant", "content": "Your name is Ann."})
    assert good.done and good.info["success"] == 1.0 and good.reward > 0
    env.reset(record)
    env.step({"role": "assistant", "content": "Hello!"})
    bad = env.step({"role": "assistant", "content": "Your name is Bob."})
    assert bad.info["success"] == 0.0 and bad.reward < good.reward
    one_turn = SimulatedUser()
    assert one_turn.reset(PromptRecord(user("What is 2 plus 3?"))) == [
        {"role": "user", "content": "What is 2 plus 3?"}
    ]
    assert one_turn.step({"role": "assistant", "content": "2 plus 3 is 5."}).done


def test_env_data_is_deterministic_and_holds_out_eval_problems(tmp_path):
    from rlhfkit.sim.envs import write_env_data

    counts = write_env_data(tmp_path / "a", seed=1, n_train=64, n_eval=16, n_sft=40)
    write_env_data(tmp_path / "b", seed=1, n_train=64, n_eval=16, n_sft=40)
    for name in counts:
        a = (tmp_path / "a" / "env" / f"{name}.jsonl").read_text()
        assert a == (tmp_path / "b" / "env" / f"{name}.jsonl").read_text()
    import json

    rows = lambda n: [json.loads(x) for x in (tmp_path / "a/env" / f"{n}.jsonl").open()]  # noqa: E731
    assert not {r["prompt"] for r in rows("calc_train")} & {r["prompt"] for r in rows("calc_eval")}
    tool_demos = [r for r in rows("calc_sft") if r["meta"]["tool"]]
    assert 0 < len(tool_demos) < counts["calc_sft"]
    for r in rows("calc_eval"):
        op, a, b = (
            r["prompt"].split()[3],
            int(r["prompt"].split()[2]),
            int(r["prompt"][:-1].split()[4]),
        )
        assert r["meta"]["answer"] == (a + b if op == "plus" else a - b)


SMOLLM2 = Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit")) / "models"
SMOLLM2 = SMOLLM2 / "SmolLM2-135M-Instruct"


@pytest.mark.skipif(
    not (SMOLLM2 / "tokenizer_config.json").exists(),
    reason="SmolLM2-135M-Instruct not fetched (python benchmarks/real/fetch_smollm2.py)",
)
def test_incremental_ids_equal_a_full_rerender_with_smollm2s_template():
    from transformers import AutoTokenizer

    from rlhfkit.env.shipped import calculator

    tok = AutoTokenizer.from_pretrained(str(SMOLLM2))
    engine = ScriptedEngine(tok, ["calc(347 + 589)", "347 plus 589 is 936."])
    record = PromptRecord(user("What is 347 plus 589?"), meta={"answer": 936})

    def make_env():
        return calculator(tool_role="tool")

    (ep,) = run_episodes(engine, tok, make_env, [record], torch.tensor([0]),
                         RolloutConfig(max_new_tokens=16), EpisodeConfig())  # fmt: skip
    assert ep.end == "done" and ep.reward == 1.0 and ep.tool_calls == 1
    full = render_ids(tok, ep.messages, None, False)
    n = len(ep.prompt_ids) + len(ep.ids)
    assert ep.prompt_ids + ep.ids == full[:n] and tok.decode(full[n:]) == "\n"
    env_span = [t for t, a in zip(ep.ids, ep.action, strict=True) if not a]
    assert tok.decode(env_span) == "\n<|im_start|>tool\n= 936<|im_end|>\n<|im_start|>assistant\n"


def test_the_docs_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "env.md").read_text()
    section = text.split("## How to write an environment", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 30
    exec(compile(code, "docs/env.md", "exec"), {"__name__": "docs_example"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(
        line.split()[0] in ("done", "length", "turn_cap") for line in lines
    )


def test_the_smollm2_calculator_preset_loads_and_its_convention_round_trips(tok):
    """grpo_smollm2_calculator: `rlhfkit config show` loads it; the call its system prompt and
    worked exchange show is what the environment's parser reads, the tool's reply is the one
    the exchange shows, the answer line scores; a scripted episode in a ChatML template with a
    tool role (the tiny tokenizer, SmolLM2's layout) equals a full re-render."""
    import re

    from typer.testing import CliRunner

    from rlhfkit.algos.pg import PGConfig
    from rlhfkit.cli import app
    from rlhfkit.config import load_config
    from rlhfkit.env.shipped import calculator

    shown = CliRunner().invoke(
        app, ["config", "show", "grpo", "--preset", "grpo_smollm2_calculator"]
    )
    assert shown.exit_code == 0, shown.output
    assert "rlhfkit.env.shipped:calculator" in shown.output
    cfg = load_config(PGConfig, preset="grpo_smollm2_calculator")
    assert cfg.grad_accum_steps == 4 and cfg.reward_fn is None
    env = calculator(**cfg.env_args)
    assert env.tools is None  # SmolLM2's template ignores tools=: the prompt teaches the format
    record = PromptRecord(user("What is 20 plus 57?"), meta={"answer": 77})
    opening = env.reset(record)
    system, *examples, question = opening
    assert system == {"role": "system", "content": cfg.env_args["system_prompt"]}
    assert question == {"role": "user", "content": "What is 20 plus 57?"}
    assert [m["role"] for m in examples] == ["user", "assistant", "tool", "assistant"]
    # the call the system prompt writes in words, and the exchange's call, both parse
    (inline,) = re.findall(r"calc\(\d[^)]*\)", system["content"])  # not calc(expression)
    assert inline == examples[1]["content"] == "calc(27 + 14)"
    step = env.step({"role": "assistant", "content": inline})
    assert step.messages == [examples[2]] and step.info["tool_calls"] == 1  # "= 41", as shown
    env.reset(PromptRecord(user("What is 27 plus 14?"), meta={"answer": 41}))
    final = env.step({"role": "assistant", "content": examples[3]["content"]})
    assert (final.reward, final.done) == (1.0, True)
    # one scripted episode: the tool turn comes back as a `tool` message, ids ≡ a re-render
    chatml = _with_template(tok, CHATML)
    engine = ScriptedEngine(chatml, ["calc(20 + 57)", "The answer is 77."])
    (ep,) = run(chatml, engine, lambda: calculator(**cfg.env_args), [record],
                EpisodeConfig(max_turns=3, max_tokens=400), max_new_tokens=16)  # fmt: skip
    assert ep.end == "done" and ep.reward == 1.0 and ep.tool_calls == 1 and ep.invalid_calls == 0
    assert ep.messages[-2] == {"role": "tool", "content": "= 77"}
    assert check_episode(chatml, ep)
