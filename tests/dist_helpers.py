"""What the processes launched by tests/test_distributed.py import: the toy reward of the online
runs (by its import path, `reward_fn: dist_helpers:target_fraction`), which can also kill its
own process, for the kill-and-resume test, and one that fails on one process only."""

from __future__ import annotations

import os
import signal

TARGET = "w7"
_calls = 0


def target_fraction(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of reply words equal to TARGET. With RLHFKIT_TEST_KILL_AT=k, process 0 kills
    itself (SIGKILL, no clean-up) at its k-th call: in the middle of iteration k's rollout."""
    global _calls
    _calls += 1
    kill_at = int(os.environ.get("RLHFKIT_TEST_KILL_AT", "0"))
    if kill_at and _calls == kill_at and os.environ.get("RANK", "0") == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    out = []
    for r in responses:
        words = r.split()
        out.append(sum(w == TARGET for w in words) / len(words) if words else 0.0)
    return out


def fails_on_rank_1(prompts: list[str], responses: list[str]) -> list[float]:
    """`target_fraction`, except that process 1 raises at its 2nd call (iteration 2's rollout):
    a reward function failing on one process only, which must not leave the other waiting."""
    scores = target_fraction(prompts, responses)
    if _calls == 2 and os.environ.get("RANK", "0") == "1":
        raise ValueError("rank 1 cannot score")
    return scores
