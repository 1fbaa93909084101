"""rlhfkit against TRL on the anchor workload, in turn: for each round and each trainer, TRL's
run, then rlhfkit's eager run, then (with `--compile`) rlhfkit's run with `engine.compile: true`,
each in a fresh process, one after the other, so the three see the same machine.

Each side runs twice, a short and a long run (S1 and S2 steps in all, warm-up included), and the
CPU time of one step is (CPU(S2) − CPU(S1)) / (S2 − S1): the user + system seconds the process
was charged (`os.wait4`), less its compile seconds, so start-up, model loading, the benchmarks'
GEMM probes and compiling cancel out, and a process that waits for a core on a shared host is not
charged for the wait. That is the measure to read when the machine is loaded; the median wall
seconds per step of the long run (what each script prints) is reported beside it.

Prints one JSON line per process as it ends and, at the end, a line per trainer: the CPU seconds
per step of each side, the ratios TRL / rlhfkit, the compile seconds of the compiled runs and peak
RSS.

TRL is not a dependency of rlhfkit: `--trl-python` is the interpreter of an environment with TRL
1.16 (reward, dpo, kto, grpo, rloo) and `--trl-ppo-python` one with TRL 1.12 (its last release
with a PPO trainer); `--trl-bench` is the script that runs TRL's trainers on the anchor assets and
prints one JSON line with `s_per_step` (the anchor benchmark's TRL script, kept outside this
repository); `--assets` its assets folder (both sides read it). Online DPO's TRL side is
`online_dpo_throughput.py --trl` run by `--trl-python`.

    python -m benchmarks.vs_trl --trl-python ENV/bin/python --trl-ppo-python ENV_PPO/bin/python \
        --trl-bench PATH/bench_trl.py --assets DIR --trainers grpo rloo ppo dpo rm --threads 1 \
        --rounds 1 --compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, load_avg

# trainer -> (TRL subcommand, rlhfkit module, rlhfkit args, (S1, S2) steps in all, rlhfkit's
# option for its step count and whether that count excludes the 2 warm-up steps)
PLAN = {
    "rm": ("reward", "benchmarks.rm_throughput", [], (8, 24), "--steps", False),
    "dpo": ("dpo", "benchmarks.dpo_throughput", ["--reference", "live"], (8, 24), "--steps", False),
    "kto": ("kto", "benchmarks.kto_throughput", ["--reference", "live"], (8, 24), "--steps", False),
    # the reference log-probs computed once before the first step (both runs: it cancels)
    "kto_cached": (
        "kto",
        "benchmarks.kto_throughput",
        ["--reference", "cached"],
        (8, 24),
        "--steps",
        False,
    ),
    # TRL's side of online DPO is the same script with --trl, in TRL's environment
    "online_dpo": (None, "benchmarks.online_dpo_throughput", [], (4, 10), "--iterations", True),
    "grpo": ("grpo", "benchmarks.pg_throughput", ["--algo", "grpo"], (4, 12), "--iterations", True),
    "rloo": ("rloo", "benchmarks.pg_throughput", ["--algo", "rloo"], (4, 12), "--iterations", True),
    "ppo": ("ppo", "benchmarks.ppo_throughput", [], (3, 7), "--iterations", True),
}
WARMUP = 2


def last_json(text: str) -> dict | None:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run(cmd: list[str], timeout: int) -> dict:
    """Run `cmd`; its last JSON line with `cpu_s` (user + system seconds of the process and the
    children it waited for) and `wall_s` added."""
    import os
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read())),
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read())),
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in readers:
        t.join()
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    line = last_json("".join(out_chunks))
    if line is None:
        line = {"status": "error", "cmd": " ".join(cmd), "stderr": "".join(err_chunks)[-600:]}
    line["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    line["wall_s"] = round(time.perf_counter() - start, 1)
    return line


def seconds(line: dict) -> float | None:
    """The median wall seconds per step (offline scripts) or per iteration (online ones)."""
    return line.get("s_per_step", line.get("s_per_iter"))


def cpu(line: dict) -> float:
    """A run's CPU seconds less the seconds it spent compiling (`perf/compile_s`, at one thread
    about CPU seconds), which differ between runs when a shape recompiles."""
    return line["cpu_s"] - (line.get("compile_s") or 0.0)


def commands(args: argparse.Namespace, trainer: str, steps: int) -> dict[str, list[str]]:
    """The command of each side for a run of `steps` steps in all (warm-up included)."""
    trl_cmd, module, extra, _, count_flag, minus_warmup = PLAN[trainer]
    python = args.trl_ppo_python if trainer == "ppo" else args.trl_python
    common = ["--threads", str(args.threads), "--assets", args.assets]
    ours_n = steps - WARMUP if minus_warmup else steps
    ours = [sys.executable, "-m", module, *extra, "--precision", "fp32",
            count_flag, str(ours_n), "--warmup", str(WARMUP), *common]  # fmt: skip
    trl = [python, args.trl_bench, trl_cmd, "--steps", str(steps)]
    if trl_cmd is None:
        trl = [python, "-m", module, "--trl", count_flag, str(ours_n)]
    out = {"trl": [*trl, "--warmup", str(WARMUP), *common], "rlhfkit": ours}
    if args.compile:
        out["rlhfkit_compile"] = [*ours, "--compile"]
    return out


def summary(trainer: str, args: argparse.Namespace, lines: dict[str, list[dict]]) -> dict:
    """One trainer's medians over the rounds and the ratios TRL / rlhfkit."""
    med = {}
    for side in ("trl", "rlhfkit", "rlhfkit_compile"):
        cpu = [x["cpu_s_per_step"] for x in lines.get(side, [])]
        med[side] = round(statistics.median(cpu), 3) if cpu else None
    ratio = {
        side: round(med["trl"] / med[side], 2) if med["trl"] and med[side] else None
        for side in ("rlhfkit", "rlhfkit_compile")
    }
    return {
        "trainer": trainer, "threads": args.threads, "rounds": args.rounds,
        "trl_cpu_s": med["trl"], "rlhfkit_cpu_s": med["rlhfkit"], "ratio": ratio["rlhfkit"],
        "rlhfkit_compile_cpu_s": med["rlhfkit_compile"], "ratio_compile": ratio["rlhfkit_compile"],
        "compile_s": [x["compile_s"] for x in lines.get("rlhfkit_compile", [])],
        "wall_s_per_step": {s: [x["wall_s_per_step"] for x in v] for s, v in lines.items()},
        "peak_rss_mib": {s: [x["peak_rss_mib"] for x in v] for s, v in lines.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trl-python", required=True)
    ap.add_argument("--trl-ppo-python", help="an environment with TRL 1.12 (PPO)")
    ap.add_argument("--trl-bench", required=True, help="the anchor benchmark's bench_trl.py")
    ap.add_argument(
        "--trainers", nargs="+", default=["grpo", "rloo", "ppo", "dpo", "rm"], choices=sorted(PLAN)
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also rlhfkit with engine.compile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--assets", required=True, help="the anchor assets (TRL's side reads them)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--results", type=Path, help="append every JSON line here too")
    ap.add_argument(
        "--sides", nargs="+", default=["trl", "rlhfkit", "rlhfkit_compile"],
        help="run only these sides (rlhfkit_compile needs --compile)",
    )  # fmt: skip
    args = ap.parse_args()

    runs: dict[str, dict[str, list[dict]]] = {t: {} for t in args.trainers}
    for r in range(1, args.rounds + 1):
        for trainer in args.trainers:
            s1, s2 = PLAN[trainer][3]
            short, long = commands(args, trainer, s1), commands(args, trainer, s2)
            for side in [x for x in short if x in args.sides]:
                a, b = run(short[side], args.timeout), run(long[side], args.timeout)
                line = {
                    "vs_trl_round": r, "vs_trl_side": side, "vs_trl_trainer": trainer,
                    "cpu_s_per_step": round((cpu(b) - cpu(a)) / (s2 - s1), 3),
                    "steps": [s1, s2], "wall_s_per_step": seconds(b),
                    "peak_rss_mib": b.get("peak_rss_mib"), "compile_s": [a.get("compile_s"), b.get("compile_s")],
                    "status": b.get("status", "ok"), "load_avg_after": load_avg(), "long_run": b,
                }  # fmt: skip
                runs[trainer].setdefault(side, []).append(line)
                emit(line, args.results)
    for trainer in args.trainers:
        print(json.dumps(summary(trainer, args, runs[trainer])), flush=True)


if __name__ == "__main__":
    main()
