"""`--compile` and `--no-chunk` for the throughput benchmarks, so each runs with and without the
two speed/memory features of issue #30.

- `--compile`: `engine.compile: true` (the decoder blocks compiled; `perf/compile_s` in the
  metrics says how much of the run was compiling);
- `--no-chunk`: log-probs from the whole (tokens × vocabulary) logits in one piece, as before
  `core.head_logprobs` chunked them (`LOGITS_CHUNK_ELEMENTS` and `LOGITS_CHUNK_TOKENS` set
  beyond any batch).

The parent process parses the flags and `export`s them as environment variables, which the
benchmarks' child processes inherit; a child merges `engine_switches()` into its engine settings
(which also applies `--no-chunk` in that process). Each result line gets `switches()`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

COMPILE, NO_CHUNK = "RLHFKIT_BENCH_COMPILE", "RLHFKIT_BENCH_NO_CHUNK"


def add_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--compile", action="store_true", help="engine.compile: true")
    ap.add_argument(
        "--no-chunk", action="store_true", help="log-probs from the whole logits, unchunked"
    )


def export(args: argparse.Namespace) -> None:
    """Set the given switches for this process and its children. A flag not given leaves the
    variable as it is: a child process is started without the flags and keeps what its parent
    exported."""
    if args.compile:
        os.environ[COMPILE] = "1"
    if args.no_chunk:
        os.environ[NO_CHUNK] = "1"


def switches() -> dict[str, Any]:
    """The switches of this process, and with `--compile` the seconds it spent compiling
    (`perf/compile_s`: the warm-up steps absorb them; the timed steps are the compiled ones)."""
    out: dict[str, Any] = {
        "compile": bool(os.environ.get(COMPILE)),
        "chunked": not os.environ.get(NO_CHUNK),
    }
    if out["compile"]:
        from rlhfkit.engine.compile import compile_seconds

        out["compile_s"] = round(compile_seconds(), 1)
    return out


def engine_switches() -> dict[str, Any]:
    """Engine settings for this process's switches (and `--no-chunk` applied here)."""
    if os.environ.get(NO_CHUNK):
        import rlhfkit.core.logprobs

        rlhfkit.core.logprobs.LOGITS_CHUNK_ELEMENTS = 2**62
        rlhfkit.core.logprobs.LOGITS_CHUNK_TOKENS = 2**62
    return {"compile": True} if os.environ.get(COMPILE) else {}
