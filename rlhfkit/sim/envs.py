"""The simulated world's environments and their data (docs/env.md):

- `SimulatedUser`: a world prompt played as a conversation. A two-turn dialogue opens with the
  user's first turn only; the world answers the policy's first reply with the follow-up
  question, and the gold scorer judges the policy's last reply in the dialogue as it went
  (the policy's own first reply in it). One-turn prompts are judged at once.
- `write_env_data(out_dir, seed)`: the data sets of the shipped environments under
  OUT/env/: two-digit addition and subtraction prompts (operands 10…99, beyond the world's own
  arithmetic family; train / eval, `meta.answer`), SFT demonstrations of which a fraction
  `tool_fraction` call the calculator (`calc(a + b)`, the result back as a user turn "= c",
  then "The answer is c.") and the rest answer directly ("a plus b is c."), and guessing-game
  prompts (`meta.secret`).

    python -m rlhfkit.sim.envs --out sim          # writes sim/env/*.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from rlhfkit.env import StepResult, record_messages
from rlhfkit.sim.gold import judge
from rlhfkit.sim.world import FAMILIES
from rlhfkit.types import PromptRecord

__all__ = ["SimulatedUser", "write_env_data"]

CALC_OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b}
GAME_HIGH = 16


class SimulatedUser:
    """The world's user: opens a two-turn dialogue with its first turn, asks its follow-up after
    the policy's reply, and ends with the gold scorer's judgement of the last reply (reward: the
    gold score; `success`: the behaviour the scorer saw is the family's ideal one)."""

    tools = None

    def __init__(self) -> None:
        self.record: PromptRecord | None = None
        self.pending: list[dict[str, str]] = []
        self.dialogue: list[dict[str, str]] = []

    def reset(self, record: PromptRecord) -> list[dict[str, str]]:
        self.record = record
        messages = record_messages(record)
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        first = users[0] + 1 if len(users) > 1 else len(messages)  # up to the first user turn
        self.pending = [m for m in messages[first:] if m["role"] == "user"]
        self.dialogue = messages[:first]
        return list(self.dialogue)

    def step(self, message: dict[str, str]) -> StepResult:
        self.dialogue.append({"role": "assistant", "content": message["content"]})
        if self.pending:
            follow_up = self.pending.pop(0)
            self.dialogue.append(follow_up)
            return StepResult([follow_up], 0.0, False)
        verdict = judge(self.dialogue[:-1], message["content"])
        ideal = FAMILIES[verdict.family].ideal_behaviour
        return StepResult([], verdict.score, True, {"success": float(verdict.behaviour == ideal)})


def _calc_task(rng: random.Random) -> tuple[str, int, int, int]:
    op = rng.choice(sorted(CALC_OPS))
    a, b = rng.randrange(10, 100), rng.randrange(10, 100)
    if op == "minus" and b > a:
        a, b = b, a
    return op, a, b, CALC_OPS[op](a, b)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_env_data(
    out_dir: str | Path,
    seed: int = 0,
    n_train: int = 512,
    n_eval: int = 128,
    n_sft: int = 1024,
    tool_fraction: float = 0.5,
) -> dict[str, int]:
    """Write OUT/env/{calc_train,calc_eval,calc_sft,game_train,game_eval}.jsonl (module
    docstring); arithmetic eval problems never appear in training. Returns the row counts."""
    out = Path(out_dir) / "env"
    rng = random.Random(f"env-{seed}")
    seen: set[tuple[str, int, int]] = set()

    def fresh() -> tuple[str, int, int, int]:
        while True:
            op, a, b, c = _calc_task(rng)
            if (op, a, b) not in seen:
                seen.add((op, a, b))
                return op, a, b, c

    def prompt_row(op: str, a: int, b: int, c: int) -> dict[str, Any]:
        return {"prompt": f"What is {a} {op} {b}?", "meta": {"answer": c, "family": "calc"}}

    calc_eval = [prompt_row(*fresh()) for _ in range(n_eval)]
    calc_train = [prompt_row(*fresh()) for _ in range(n_train)]
    sft = []
    for _ in range(n_sft):
        op, a, b, c = _calc_task(rng)
        q = f"What is {a} {op} {b}?"
        if rng.random() < tool_fraction:
            call = f"calc({a} {'+' if op == 'plus' else '-'} {b})"
            sft.append({"prompt": q, "response": call, "meta": {"tool": True}})
            sft.append({"prompt": [{"role": "user", "content": q},
                                   {"role": "assistant", "content": call},
                                   {"role": "user", "content": f"= {c}"}],
                        "response": f"The answer is {c}.", "meta": {"tool": True}})  # fmt: skip
        else:
            answer = f"{a} {op} {b} is {c}."
            sft.append({"prompt": q, "response": answer, "meta": {"tool": False}})

    def game_row() -> dict[str, Any]:
        secret = rng.randrange(1, GAME_HIGH + 1)
        return {"prompt": f"Guess my number from 1 to {GAME_HIGH}.", "meta": {"secret": secret}}

    files = {
        "calc_train": calc_train,
        "calc_eval": calc_eval,
        "calc_sft": sft,
        "game_train": [game_row() for _ in range(n_train)],
        "game_eval": [game_row() for _ in range(n_eval)],
    }
    for name, rows in files.items():
        _jsonl(out / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in files.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="sim")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_env_data(args.out, args.seed))
