"""Pairwise LLM judges: a local Hugging Face causal LM, or any OpenAI-compatible chat endpoint.

Both fill an editable prompt template (`templates/pairwise_judge.txt`, or the user's file) with
the conversation and two replies and return a `Verdict`: P(reply A is better) and the raw
output, which the evaluation saves for audit. Ask them in both orders (`ask_both_orders`, which
`eval.judges.judge_both_orders` and online DPO's labelling use), never in one order only: LLM
judges favour a position (Zheng et al. 2023 §3.3; Wang et al. 2023). `JudgeConfig` is how a
judge is configured (`rlhfkit eval run --judge-*`, `rlhfkit online-dpo judge.*`);
`check_judge` / `build_judge` check it before a run starts and build it.

They live in `rollout` (beside the rewards) rather than in `eval`, so that a trainer can label
with them: `eval` sits above the algorithms (docs/architecture.md, "Layers").

Implementation details:

1. Template: Python `str.format` with `{prompt}`, `{reply_a}`, `{reply_b}`; leading lines that
   start with "#" are the file's own documentation and are not sent.
2. Local judge (`LocalLMJudge`): the filled template becomes one user turn, formatted as the
   model's chat template when it has one, else the HH "Human: … Assistant:" format
   (`data.format_prompt`); one forward pass; P(A) = p_A / (p_A + p_B) from the next-token
   distribution, where p_X sums the probabilities of the first token of "X" and of " X".
   Deterministic, no sampling; batched.
3. API judge (`OpenAIJudge`): POST {base_url}/chat/completions (the OpenAI chat-completions
   schema, served by OpenAI, vLLM, llama.cpp, Ollama, TGI …) with temperature 0; the API key is
   read from the environment variable named in the config (never from a file or the command
   line); the verdict is 1 for the first standalone "A" in the reply, 0 for "B", ½ (a tie)
   when neither is found. Plain `urllib` from the standard library: no extra dependency.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase, ConfigError
from rlhfkit.types import Dialogue, Message

__all__ = [
    "DEFAULT_TEMPLATE",
    "JudgeConfig",
    "Judgment",
    "LocalLMJudge",
    "OpenAIJudge",
    "Verdict",
    "ask_both_orders",
    "build_judge",
    "check_judge",
    "load_template",
    "render_dialogue",
]

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "pairwise_judge.txt"


@dataclass(frozen=True)
class Verdict:
    p_a: float  # P(the reply shown first is better), in [0, 1]
    raw: str  # what the judge returned (text, or the two probabilities), kept for audit


def load_template(path: str | Path | None = None) -> str:
    """The template text without its leading "#" documentation lines; checks the placeholders."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    text = "\n".join(lines).strip("\n") + "\n"
    for key in ("{prompt}", "{reply_a}", "{reply_b}"):
        if key not in text:
            raise ValueError(f"judge template {path}: placeholder {key} is missing")
    return text


def render_dialogue(prompt: Any) -> str:
    """A prompt as the judge reads it: a lone user turn as its text, a longer dialogue as
    "User: …" / "Assistant: …" / "System: …" lines; a string as is."""
    if isinstance(prompt, str):
        return prompt
    turns: Dialogue = tuple(prompt)
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].content
    return "\n".join(f"{m.role.capitalize()}: {m.content}" for m in turns)


def _fill(template: str, prompt: Any, reply_a: str, reply_b: str) -> str:
    return template.format(prompt=render_dialogue(prompt), reply_a=reply_a, reply_b=reply_b)


class LocalLMJudge:
    """A local causal LM as a pairwise judge (see the module docstring, detail 2)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        template: str | None = None,
        batch_size: int = 16,
    ):
        from rlhfkit.data import ensure_pad_token

        self.model = model.eval()
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        ensure_pad_token(tokenizer)
        self.template = template or load_template()
        self.choices = [self._first_tokens(c) for c in ("A", "B")]

    def _first_tokens(self, letter: str) -> list[int]:
        ids = {
            self.tokenizer.encode(v, add_special_tokens=False)[0] for v in (letter, " " + letter)
        }
        return sorted(ids)

    def text(self, prompt: Any, reply_a: str, reply_b: str) -> str:
        """The exact text the model reads (chat template or HH format around the filled one)."""
        from rlhfkit.data import format_prompt

        filled = _fill(self.template, prompt, reply_a, reply_b)
        return format_prompt(self.tokenizer, (Message("user", filled),))

    def judge_many(self, items: Sequence[tuple[Any, str, str]]) -> list[Verdict]:
        """One verdict per (prompt, reply_a, reply_b), `batch_size` per left-padded forward."""
        return [
            v
            for i in range(0, len(items), self.batch_size)
            for v in self._judge_batch(items[i : i + self.batch_size])
        ]

    @torch.inference_mode()
    def _judge_batch(self, items: Sequence[tuple[Any, str, str]]) -> list[Verdict]:
        texts = [self.text(*it) for it in items]
        enc = [self.tokenizer.encode(t) for t in texts]
        width = max(len(e) for e in enc)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        device = next(self.model.parameters()).device
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            position_ids=positions.to(device), use_cache=False,
        ).logits[:, -1].float()  # fmt: skip
        probs = torch.softmax(logits, dim=-1)
        p_a = probs[:, self.choices[0]].sum(-1)
        p_b = probs[:, self.choices[1]].sum(-1)
        share = p_a / (p_a + p_b).clamp(min=1e-30)
        return [
            Verdict(float(s), json.dumps({"p_A": float(a), "p_B": float(b)}))
            for s, a, b in zip(share, p_a, p_b, strict=True)
        ]

    def judge(self, prompt: Any, reply_a: str, reply_b: str) -> Verdict:
        return self.judge_many([(prompt, reply_a, reply_b)])[0]

    def __call__(self, prompt: Any, reply_a: str, reply_b: str) -> float:
        return self.judge(prompt, reply_a, reply_b).p_a


_LETTER = re.compile(r"\b([AB])\b")


class OpenAIJudge:
    """An OpenAI-compatible chat-completions endpoint as a pairwise judge (detail 3)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        template: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 8,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.template = template or load_template()
        self.timeout = timeout
        self.max_tokens = max_tokens

    def judge(self, prompt: Any, reply_a: str, reply_b: str) -> Verdict:
        body = {
            "model": self.model,
            "messages": [
                {"role": "user", "content": _fill(self.template, prompt, reply_a, reply_b)}
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            answer = json.loads(response.read().decode())
        text = answer["choices"][0]["message"]["content"] or ""
        match = _LETTER.search(text)
        p_a = 0.5 if match is None else (1.0 if match.group(1) == "A" else 0.0)
        return Verdict(p_a, text)

    def __call__(self, prompt: Any, reply_a: str, reply_b: str) -> float:
        return self.judge(prompt, reply_a, reply_b).p_a


class JudgeConfig(ConfigBase):
    """A pairwise LLM judge: a local causal LM (`model`) or an OpenAI-compatible endpoint
    (`url` + `api_model`), with its prompt template. The options of `rlhfkit eval run`
    (`--judge-model`, `--judge-url`, `--judge-api-model`, `--judge-api-key-env`,
    `--judge-template`) fill the same keys."""

    model: str | None = None
    """A local causal LM folder as the judge (verdict: P("A") / (P("A") + P("B")) of its next
    token)."""
    url: str | None = None
    """An OpenAI-compatible base URL instead, e.g. http://host:8000/v1 (temperature 0)."""
    api_model: str | None = None
    """The model name the endpoint at `url` serves."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (never a file or the command line)."""
    template: str | None = None
    """Judge prompt template file (null: rlhfkit's, `rollout/templates/pairwise_judge.txt`)."""
    batch_size: int = Field(16, ge=1)
    """Judgments per forward pass of a local judge."""

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeConfig:
        if self.model and self.url:
            raise ValueError("give judge `model` (a local causal LM) or `url`, not both")
        if self.url and not self.api_model:
            raise ValueError("judge `url` needs `api_model` (the model name the endpoint serves)")
        return self

    @property
    def given(self) -> bool:
        return bool(self.model or self.url)


def check_judge(cfg: JudgeConfig, key: str = "judge") -> str:
    """The template text, after checking what `build_judge` will read: the template file and
    its placeholders, the local model folder. Raises `ConfigError` / `FileNotFoundError` naming
    `key` (the config key or option holding the judge), before a run directory is made."""
    if not cfg.given:
        raise ConfigError(f"{key}: set {key}.model (a local causal LM) or {key}.url")
    try:
        text = load_template(cfg.template)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{key}.template: {e}") from None
    if cfg.model and not cfg.model.startswith("tiny:"):
        from rlhfkit.models import check_source

        check_source(cfg.model, f"{key}.model", "model")
    return text


def build_judge(
    cfg: JudgeConfig, device: torch.device | str = "cpu", key: str = "judge"
) -> LocalLMJudge | OpenAIJudge:
    """The judge `cfg` names (checked by `check_judge` first)."""
    text = check_judge(cfg, key)
    if cfg.url:
        return OpenAIJudge(cfg.url, str(cfg.api_model), cfg.api_key_env, text)
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer

    model = load_policy(ModelConfig(name_or_path=str(cfg.model))).to(device)
    return LocalLMJudge(model, load_tokenizer(cfg.model), text, cfg.batch_size)


@dataclass(frozen=True)
class Judgment:
    """One item judged in both orders: J(x, a, b) and J(x, b, a) with the judge's raw output."""

    prompt: Any
    reply_a: str
    reply_b: str
    p_ab: float  # P(a better) with a shown first
    p_ba: float  # P(b better) with b shown first
    raw_ab: str
    raw_ba: str

    @property
    def outcome(self) -> float:
        """½·(J(x, a, b) + 1 − J(x, b, a)): a's share of a win, position bias averaged out."""
        return 0.5 * (self.p_ab + 1.0 - self.p_ba)

    @property
    def inconsistent(self) -> bool:
        """Both orders decisive (≠ ½) but naming different replies: the verdict followed the
        position, not the reply."""
        if self.p_ab == 0.5 or self.p_ba == 0.5:
            return False
        return (self.p_ab > 0.5) != (self.p_ba < 0.5)

    def to_dict(self) -> dict[str, Any]:
        prompt = self.prompt
        if not isinstance(prompt, str):
            prompt = [{"role": m.role, "content": m.content} for m in prompt]
        return {
            "prompt": prompt, "reply_a": self.reply_a, "reply_b": self.reply_b,
            "p_a_first": self.p_ab, "p_b_first": self.p_ba,
            "raw_a_first": self.raw_ab, "raw_b_first": self.raw_ba,
            "outcome": self.outcome, "inconsistent": self.inconsistent,
        }  # fmt: skip


def ask_both_orders(judge: Any, items: Sequence[tuple[Any, str, str]]) -> list[Judgment]:
    """Every (prompt, a, b) asked as (a, b) and as (b, a). `judge` is a pairwise callable
    `(prompt, a, b) -> P(a better)`, or has `judge_many(items) -> [Verdict]` (one batched call
    per order) / `judge(prompt, a, b) -> Verdict` (the LLM judges), whose raw outputs are kept.
    Raises ValueError for an answer outside [0, 1]."""
    items = list(items)
    swapped = [(p, b, a) for p, a, b in items]
    if hasattr(judge, "judge_many"):
        first, second = judge.judge_many(items), judge.judge_many(swapped)
        pairs = [((f.p_a, f.raw), (s.p_a, s.raw)) for f, s in zip(first, second, strict=True)]
    elif hasattr(judge, "judge"):
        pairs = [
            ((v.p_a, v.raw), (w.p_a, w.raw))
            for v, w in (
                (judge.judge(*x), judge.judge(*y)) for x, y in zip(items, swapped, strict=True)
            )
        ]
    else:
        pairs = [
            ((float(judge(*x)), ""), (float(judge(*y)), ""))
            for x, y in zip(items, swapped, strict=True)
        ]
    judgments = []
    for (p, a, b), ((p_ab, raw_ab), (p_ba, raw_ba)) in zip(items, pairs, strict=True):
        for value, order in ((p_ab, "(a, b)"), (p_ba, "(b, a)")):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"pairwise judge returned {value} for order {order}; expected [0, 1]"
                )
        judgments.append(Judgment(p, a, b, p_ab, p_ba, str(raw_ab), str(raw_ba)))
    return judgments
