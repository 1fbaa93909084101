"""The multi-turn rollout driver, token in / token out.

    episodes = run_episodes(engine, tokenizer, make_env, records, seeds, rollout_cfg, cfg)
    rollout, action_mask = episodes_rollout(episodes, pad_id)     # → the trainer's tensors

Implementation details and their sources:

1. Batched turns: every live episode's context (opening turns, replies, environment messages,
   as token ids) is left-padded into one batch and sent to the rollout engine
   (`RolloutEngine.generate`); episodes at different turns go on together, finished ones drop
   out. Each turn re-reads its context (no KV cache kept across turns): the engines' contract is
   prompt in, reply out (verl's agent loop and TRL's `rollout_func` work the same way).
2. Token in / token out: the policy's sampled ids are kept as sampled (never decoded and
   re-encoded), so the action mask marks exactly the tokens whose log-probs the sampler
   recorded. The reply's text (special tokens dropped) is what the environment reads.
3. Environment messages are tokenised as the delta of the chat template: the ids of the
   conversation rendered with the new messages and the generation prompt, minus the ids of the
   conversation rendered up to the policy's last turn, plus the template's text after that
   turn's end token (ChatML's newline), which the policy did not sample. The minus is checked:
   the shorter render must be a prefix of the longer one (a prefix-preserving template, TRL
   `chat_template_utils.is_chat_template_prefix_preserving`). A template that is not (one that
   rewrites earlier turns, e.g. drops past reasoning) is reported once, in one line, and the
   delta is the text the template writes for the new messages after a stand-in opening (one
   user turn, else one exchange), tokenised alone, after the same tail (verl's `ToolAgentLoop`
   renders new messages apart from the conversation the same way). `check_episode` compares a finished episode with a full
   re-render.
4. Seeds: turn k of the episode seeded s draws from `row_seeds((k,), [s])`: a pure function of
   the episode's seed (itself from (run seed, iteration, the row's global number)) and the turn,
   so an episode samples the same tokens whichever process or batch runs it (2 processes ≡ 1).
5. Limits: `max_turns` policy turns (an environment that never says done is cut off there), a
   token budget for the whole episode (a reply is sampled with at most the room left; an
   environment message that would overflow is cut and the episode ends), a reply that reached
   `max_new_tokens` without ending ends the episode after the environment has read it. Each is
   an episode end with a reason (`end`), counted as truncated; `truncation_penalty` is
   subtracted from its last reward, `mask_truncated` drops it from the loss (DAPO overlong
   filtering).
6. Faults: an environment whose `reset` or `step` raises ends that episode (reward so far,
   `end = "error"`, the message recorded); the caller counts them and stops past a configured
   error rate. Tool failures and malformed calls are the environment's business (they come back
   to the policy as messages, `env.tools`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhfkit.data import stop_token_ids
from rlhfkit.env.base import EnvError, Environment, EpisodeConfig, StepResult
from rlhfkit.rollout import Rollout, RolloutConfig, RolloutEngine, row_seeds
from rlhfkit.types import PromptRecord

__all__ = [
    "Episode",
    "check_episode",
    "env_delta",
    "episodes_rollout",
    "render_ids",
    "run_episodes",
]


@dataclass
class Episode:
    """One episode, token by token. `ids` follow `prompt_ids` (the opening turns);
    `action[i]` is True exactly where the policy sampled `ids[i]` (its log-prob is
    `logprobs[i]`, 0 elsewhere); `rewards` are (position in `ids` of the turn's last sampled
    token, the turn's reward), one per policy turn the environment answered."""

    record: PromptRecord
    seed: int
    env: Environment | None
    messages: list[dict[str, str]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    prompt_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    action: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rewards: list[tuple[int, float]] = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    invalid_calls: int = 0
    tool_errors: int = 0
    success: float | None = None
    end: str = ""  # "" while running; done | turn_cap | token_budget | length | error
    errors: list[str] = field(default_factory=list)
    template_fallback: bool = False

    @property
    def reward(self) -> float:
        """The episode's return: the sum of its turns' rewards."""
        return sum(r for _, r in self.rewards)

    @property
    def truncated(self) -> bool:
        return self.end in ("turn_cap", "token_budget", "length")

    def summary(self) -> dict[str, Any]:
        """What is counted and written about the episode (metrics, transcripts)."""
        return {
            "reward": self.reward,
            "turn_rewards": [r for _, r in self.rewards],
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "invalid_calls": self.invalid_calls,
            "tool_errors": self.tool_errors,
            "success": self.success,
            "end": self.end,
            "errors": list(self.errors),
            "template_fallback": self.template_fallback,
            "messages": list(self.messages),
        }


def render_ids(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    tools: list[dict[str, Any]] | None,
    add_generation_prompt: bool,
) -> list[int]:
    """The chat template's rendering of `messages` as ids (the template writes the special
    tokens, so none are added: the same path as `data.encode_prompt`)."""
    text = _render_text(tokenizer, messages, tools, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


_DUMMIES = (
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
)


def _render_text(tokenizer: Any, messages: Any, tools: Any, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def _after_last_end(ids: list[int], end_ids: Sequence[int]) -> list[int]:
    """The ids after the last end token (the template's text after an assistant turn)."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] in end_ids:
            return ids[i + 1 :]
    return []


def env_delta(
    tokenizer: Any,
    conversation: Sequence[dict[str, str]],
    new: Sequence[dict[str, str]],
    tools: list[dict[str, Any]] | None,
    end_ids: Sequence[int],
) -> tuple[list[int], bool]:
    """The ids that follow the policy's end token when `new` messages answer `conversation`
    (which ends with the policy's turn), up to the next generation prompt; and whether the
    template was prefix-preserving (False: the fallback was used, module docstring 3)."""
    prev = render_ids(tokenizer, conversation, tools, False)
    full = render_ids(tokenizer, [*conversation, *new], tools, True)
    tail = _after_last_end(prev, end_ids)
    if full[: len(prev)] == prev:
        return tail + full[len(prev) :], True
    for dummy in _DUMMIES:  # the new messages after a stand-in opening, as text
        try:
            before = _render_text(tokenizer, dummy, tools, False)
            after = _render_text(tokenizer, [*dummy, *new], tools, True)
        except Exception:  # a template that rejects this opening: try the next
            continue
        if after.startswith(before):
            ids = tokenizer(after[len(before) :], add_special_tokens=False, verbose=False)
            return tail + list(ids["input_ids"]), False
    raise EnvError("env: the chat template cannot render environment messages after a turn")


def check_episode(tokenizer: Any, episode: Episode) -> bool:
    """Whether the episode's text is the chat template's full rendering of its messages (a
    finished episode's last message is the policy's; the render may add the template's text
    after the final end token). Special tokens the policy sampled inside a turn (other than
    its end token) are left out of the comparison: the message holds the reply's text without
    them, while the ids keep them as sampled."""
    if episode.template_fallback or episode.truncated or episode.end == "error":
        return True  # not comparable: the conversation was cut or rendered another way
    ids = episode.prompt_ids + episode.ids
    expected = render_ids(tokenizer, episode.messages, episode.tools, False)
    if ids == expected[: len(ids)]:
        return True
    # a special token the policy sampled inside its turn (not its end token) is not in the
    # message the environment read (module docstring 2), so not in the render either
    dropped = set(tokenizer.all_special_ids) - set(stop_token_ids(tokenizer))
    policy = [False] * len(episode.prompt_ids) + list(episode.action)
    kept = [t for t, a in zip(ids, policy, strict=True) if not (a and t in dropped)]
    got = tokenizer.decode(kept, skip_special_tokens=False)
    want = tokenizer.decode(expected, skip_special_tokens=False)
    return want.startswith(got)  # the same text, tokenised differently by the sampler


def _start(
    make_env: Callable[[], Environment], record: PromptRecord, seed: int, tokenizer: Any
) -> Episode:
    ep = Episode(record, seed, None)
    try:
        ep.env = make_env()
        ep.messages = list(ep.env.reset(record))
        ep.tools = getattr(ep.env, "tools", None)
        ep.prompt_ids = render_ids(tokenizer, ep.messages, ep.tools, True)
    except Exception as e:  # an environment's failure ends its episode, not the run
        ep.end, ep.errors = "error", [f"reset: {type(e).__name__}: {e}"]
    return ep


def _count(ep: Episode, result: StepResult) -> None:
    info = result.info
    ep.tool_calls += int(info.get("tool_calls", 0))
    ep.invalid_calls += int(info.get("invalid_calls", 0))
    ep.tool_errors += int(info.get("tool_errors", 0))
    if "success" in info:
        ep.success = float(info["success"])


def run_episodes(
    engine: RolloutEngine,
    tokenizer: Any,
    make_env: Callable[[], Environment],
    records: Sequence[PromptRecord],
    seeds: torch.Tensor,
    rollout_cfg: RolloutConfig,
    cfg: EpisodeConfig,
    *,
    device: Any = "cpu",
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> list[Episode]:
    """Run one episode per record (episode i seeded `seeds[i]`) to its end; see the module
    docstring for the turn loop, the limits and the faults."""
    end_ids = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    episodes = [_start(make_env, r, int(s), tokenizer) for r, s in zip(records, seeds.tolist(),
                                                                       strict=True)]  # fmt: skip
    for ep in episodes:
        if not ep.end and len(ep.prompt_ids) >= cfg.max_tokens:
            ep.end = "token_budget"
    for turn in range(cfg.max_turns):
        # 1. the live episodes' contexts, left-padded into one batch
        live = [ep for ep in episodes if not ep.end]
        if not live:
            break
        contexts = [ep.prompt_ids + ep.ids for ep in live]
        room = [cfg.max_tokens - len(c) for c in contexts]
        width = max(len(c) for c in contexts)
        ids = torch.full((len(live), width), pad, dtype=torch.long)
        mask = torch.zeros((len(live), width), dtype=torch.bool)
        for i, c in enumerate(contexts):
            ids[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
            mask[i, width - len(c) :] = True
        # 2. one reply each, seeded per (episode, turn), at most the room left in the budget
        new_tokens = min(rollout_cfg.max_new_tokens, max(room))
        turn_cfg = rollout_cfg.model_copy(update={"max_new_tokens": new_tokens})
        turn_seeds = row_seeds((turn,), [ep.seed for ep in live])
        with autocast():
            out = engine.generate(ids.to(device), mask.to(device), turn_cfg, turn_seeds)
        logprobs = out.logprobs.float().cpu() if out.logprobs is not None else None
        for i, ep in enumerate(live):
            # 3. the sampled tokens, as sampled, into the record (action mask 1)
            n = min(int(out.response_mask[i].sum()), room[i])
            sampled = out.response_ids[i, :n].tolist()
            ep.ids += sampled
            ep.action += [True] * n
            ep.logprobs += logprobs[i, :n].tolist() if logprobs is not None else [0.0] * n
            ep.turns += 1
            ended = n > 0 and sampled[-1] in end_ids
            body = sampled[:-1] if ended else sampled
            reply = {
                "role": "assistant",
                "content": tokenizer.decode(body, skip_special_tokens=True),
            }
            ep.messages.append(reply)
            # 4. the environment answers (a raise ends the episode, recorded)
            try:
                result = ep.env.step(reply)
            except Exception as e:
                ep.end = "error"
                ep.errors.append(f"step {turn}: {type(e).__name__}: {e}")
                continue
            ep.rewards.append((len(ep.ids) - 1, float(result.reward)))
            _count(ep, result)
            if result.done:
                ep.end = "done"
                continue
            if not ended:
                ep.end = "length" if n < room[i] else "token_budget"
                continue
            if turn == cfg.max_turns - 1:
                ep.end = "turn_cap"
                continue
            # 5. the environment's messages as the delta of the chat template (action mask 0)
            delta, preserving = env_delta(tokenizer, ep.messages, result.messages, ep.tools,
                                          end_ids)  # fmt: skip
            ep.template_fallback |= not preserving
            ep.messages += result.messages
            left = cfg.max_tokens - len(ep.prompt_ids) - len(ep.ids)
            if len(delta) >= left:  # no room for the message and a reply: cut, end
                delta, ep.end = delta[:left], "token_budget"
            ep.ids += delta
            ep.action += [False] * len(delta)
            ep.logprobs += [0.0] * len(delta)
    for ep in episodes:  # 6. a truncated episode pays the penalty on its last policy token
        if ep.truncated and cfg.truncation_penalty and any(ep.action):
            last = max(i for i, a in enumerate(ep.action) if a)
            if ep.rewards and ep.rewards[-1][0] == last:
                ep.rewards[-1] = (last, ep.rewards[-1][1] - cfg.truncation_penalty)
            else:
                ep.rewards.append((last, -cfg.truncation_penalty))
    return episodes


def episodes_rollout(
    episodes: Sequence[Episode], pad_id: int, mask_truncated: bool = False
) -> tuple[Rollout, torch.Tensor, torch.Tensor]:
    """The episodes as the trainer's tensors: a `Rollout` whose prompts are the opening turns
    (left-padded, P columns) and whose response is everything after them (right-padded, R
    columns; `response_mask` True on every real token, the policy's and the environment's, so
    the model attends to all of them), the action mask (N, R) bool (True exactly on sampled
    tokens; all False for truncated episodes with `mask_truncated`) and the per-turn rewards
    (N, R) float32 of every turn but the last on its turn's last token (the last turn's reward
    is the episode's score, placed by the trainers on the last action token)."""
    n = len(episodes)
    p = max(1, max(len(e.prompt_ids) for e in episodes))
    r = max(1, max(len(e.ids) for e in episodes))
    prompt_ids = torch.full((n, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, p), dtype=torch.bool)
    response_ids = torch.full((n, r), pad_id, dtype=torch.long)
    response_mask = torch.zeros((n, r), dtype=torch.bool)
    action = torch.zeros((n, r), dtype=torch.bool)
    logprobs = torch.zeros((n, r), dtype=torch.float32)
    turn_rewards = torch.zeros((n, r), dtype=torch.float32)
    for i, e in enumerate(episodes):
        k, m = len(e.prompt_ids), len(e.ids)
        if k == 0:  # an episode whose reset failed: one padding token stands in for its prompt
            prompt_mask[i, -1] = True
        prompt_ids[i, p - k :] = torch.tensor(e.prompt_ids, dtype=torch.long)
        prompt_mask[i, p - k :] = True
        response_ids[i, :m] = torch.tensor(e.ids, dtype=torch.long)
        response_mask[i, :m] = True
        action[i, :m] = torch.tensor(e.action, dtype=torch.bool)
        logprobs[i, :m] = torch.tensor(e.logprobs, dtype=torch.float32)
        for pos, reward in e.rewards[:-1]:
            turn_rewards[i, pos] += reward
        if mask_truncated and e.truncated:
            action[i] = False
    rollout = Rollout(prompt_ids, prompt_mask, response_ids, response_mask, logprobs,
                      [e.end for e in episodes])  # fmt: skip
    return rollout, action, turn_rewards
