"""Environments that ship with rlhfkit (presets in rlhfkit/configs/, docs/env.md):

- `calculator(...)`: arithmetic with a `calc(expression)` tool; reward 1 for an exact final
  answer (`record.meta["answer"]`), minus `call_cost` per call.
- `GuessingGame`: guess a secret number (`record.meta["secret"]`, range `low`…`high`) with
  "Higher." / "Lower." after each guess: per-turn rewards (−`turn_cost` per wrong or invalid
  guess, +1 for the right one, optionally + `info_bonus` per bit the guess learned), so credit
  assignment over turns matters.
- The simulated user of the sim world's dialogues is `rlhfkit.sim.envs.SimulatedUser` (it needs
  the world's gold scorer, which lives above this layer).
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Sequence
from typing import Literal

from rlhfkit.env.base import StepResult, record_messages
from rlhfkit.env.tools import HermesParser, SimpleParser, ToolEnvironment
from rlhfkit.types import PromptRecord

__all__ = [
    "GuessingGame",
    "calc",
    "calculator",
    "exact_answer",
    "exact_answer_reward",
    "last_integer",
]

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.USub: operator.neg}  # fmt: skip
_WORD_OPS = {"plus": "+", "minus": "-", "times": "*"}


def calc(expression: str) -> str:
    """Evaluate an integer arithmetic expression.

    Args:
        expression: integers with + - * // and parentheses (or the words plus, minus, times),
            e.g. "347 + 589".
    """
    text = " ".join(_WORD_OPS.get(w, w) for w in expression.replace("×", "*").split())

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"cannot evaluate {expression!r}")

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot evaluate {expression!r}") from None
    return str(value(tree.body))


def last_integer(text: str) -> int | None:
    """The last integer written in digits in `text` (None if there is none)."""
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return int(found[-1]) if found else None


def exact_answer(record: PromptRecord, text: str) -> float:
    """1.0 when the reply's last integer is `record.meta["answer"]`, else 0.0."""
    return float(last_integer(text) == int(record.meta["answer"]))


def exact_answer_reward(prompts, responses, records) -> list[float]:  # noqa: ANN001
    """`exact_answer` as a one-turn `reward_fn` (the no-tool baseline of the calculator)."""
    return [exact_answer(rec, text) for rec, text in zip(records, responses, strict=True)]


def calculator(
    call_cost: float = 0.0,
    parser: Literal["simple", "hermes"] = "simple",
    tool_role: str = "user",
    system_prompt: str | None = None,
    result_prefix: str = "= ",
    examples: Sequence[dict[str, str]] = (),
) -> ToolEnvironment:
    """An arithmetic episode with the `calc` tool. `parser`: "simple" (`calc(347 + 589)`, the
    simulated world's format; its replies come back as `tool_role` "user" because the world's
    chat template and readers have no tool role) or "hermes" (`<tool_call>{json}</tool_call>`
    for real chat models, replies as "tool" messages). The result comes back as
    `result_prefix` + the number: "= 159" (a byte-level BPE writes " 159" after a space as in
    "The answer is 159.", so the answer copies the same tokens). `system_prompt` and
    `examples` (worked exchanges before the question) teach a model whose chat template has no
    tool schemas the call format (the SmolLM2 preset, docs/env.md)."""
    chosen = SimpleParser() if parser == "simple" else HermesParser()

    @functools.wraps(calc)
    def tool(expression: str) -> str:
        return result_prefix + calc(expression)

    return ToolEnvironment(
        [tool], chosen, exact_answer, call_cost=call_cost, tool_role=tool_role,
        system_prompt=system_prompt, schema_in_template=parser == "hermes", examples=examples,
    )  # fmt: skip


class GuessingGame:
    """Guess the number `record.meta["secret"]` (in `low`…`high`); the game answers "Higher."
    or "Lower." (or asks for a number). Reward per turn: −`turn_cost` for a wrong or missing
    guess, +1 and done for the right one; `success` 1 when found.

    `info_bonus` (default 0: off) adds the information a guess earned, in bits:
    info_bonus · log2(|I_before| / |I_after|), where I is the set of numbers still consistent
    with the answers so far (`low`…`high` at the start; the right guess leaves {secret}). A
    guess that halves I earns info_bonus · 1; a repeated guess, one outside I or no number earns
    0; an episode's bonuses sum to info_bonus · log2(|I_start| / |I_end|). Per turn it is
    potential-based shaping with Φ = info_bonus · log2 of 1/|I| (Ng, Harada and Russell 1999,
    "Policy invariance under reward transformations"), so it credits each turn that used the
    feedback; summed over an episode it is not constant (an episode cut off by the turn cap
    keeps the bits it learned), which is the point for the critic-free estimators: episodes
    that all failed differ by how much they narrowed the range instead of all scoring the same
    (a group of equal returns has zero advantage under GRPO)."""

    tools = None

    def __init__(
        self, turn_cost: float = 0.1, info_bonus: float = 0.0, low: int = 1, high: int = 16
    ) -> None:
        if low > high:
            raise ValueError(f"GuessingGame: low ({low}) > high ({high})")
        self.turn_cost, self.info_bonus, self.low, self.high = turn_cost, info_bonus, low, high
        self.secret = 0
        self.lo, self.hi = low, high  # I = lo…hi, the numbers still consistent

    def reset(self, record: PromptRecord) -> list[dict[str, str]]:
        self.secret = int(record.meta["secret"])
        self.lo, self.hi = self.low, self.high
        return record_messages(record)

    def _bits(self, guess: int | None) -> float:
        """log2(|I_before| / |I_after|) of `guess`, and I updated to I_after."""
        before = self.hi - self.lo + 1
        if guess == self.secret:
            self.lo = self.hi = self.secret
        elif guess is not None and guess < self.secret:
            self.lo = max(self.lo, guess + 1)
        elif guess is not None:
            self.hi = min(self.hi, guess - 1)
        return math.log2(before / (self.hi - self.lo + 1))

    def step(self, message: dict[str, str]) -> StepResult:
        guess = last_integer(message["content"])
        bonus = self.info_bonus * self._bits(guess)
        if guess == self.secret:
            return StepResult([], 1.0 + bonus, True, {"success": 1.0})
        if guess is None:
            reply, info = "Say a number.", {"invalid_calls": 1, "success": 0.0}
        else:
            reply, info = ("Higher." if guess < self.secret else "Lower."), {"success": 0.0}
        reward = -self.turn_cost + bonus
        return StepResult([{"role": "user", "content": reply}], reward, False, info)
