"""Peak memory and step time with and without gradient checkpointing (`model.gradient_checkpointing`).

A training step of the built-in "mini" tiny models (`rlhfkit.models.tiny`: 6 layers, d = 256,
random init, 1,024-token vocabulary) on long rows: next-token loss over every token, backward,
AdamW step, float32, 2 torch threads, the model in eval mode (no dropout: how PPO, GRPO, DPO and
the RM with `disable_dropout` train, the case where checkpointing used to be silently off).
Checkpointing is switched on by `rlhfkit.models.enable_gradient_checkpointing`, the call
`load_policy` / `build_scalar_model` make for `gradient_checkpointing: true`.

Each configuration runs in its own process, so its peak RSS (`ru_maxrss`, the whole process) is
its own; "step MiB" is the peak minus the RSS once the model, the batch and the optimiser exist
and before the first step: what training steps added (activations, gradients, Adam's moments —
the last two the same with and without checkpointing). Step time: median of `--steps` steps
after one warm-up step.

    python -m benchmarks.grad_checkpointing [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from benchmarks.common import ROOT, command, peak_rss_mib

# (arch, rows, tokens per row): Llama's rotary positions have no table limit; GPT-2 mini's
# position table has 256 rows
WORKLOADS = [("llama", 4, 1024), ("gpt2", 16, 256)]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_one(arch: str, rows: int, tokens: int, ckpt: bool, steps: int) -> dict:
    import torch

    from rlhfkit.models import checkpointed_layers, enable_gradient_checkpointing
    from rlhfkit.models.tiny import build_tiny_model, count_parameters

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_tiny_model(arch, "mini", vocab_size=1024, seed=0)
    if ckpt:
        enable_gradient_checkpointing(model)
    model.eval()  # no dropout; checkpointing must hold anyway
    ids = torch.randint(0, 1024, (rows, tokens))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    base = rss_mib()
    step()  # warm-up (Adam's state is allocated here: the same 2 × 4 bytes/param either way)
    times = [step() for _ in range(steps)]
    peak = peak_rss_mib()
    return {
        "bench": "grad_checkpointing",
        "model": f"tiny:{arch}-mini",
        "params_m": round(count_parameters(model) / 1e6, 2),
        "rows": rows,
        "tokens_per_row": tokens,
        "gradient_checkpointing": ckpt,
        "checkpointed_layers": len(checkpointed_layers(model)),
        "step_s": round(statistics.median(times), 3),
        "peak_rss_mib": round(peak, 1),
        "step_mib": round(peak - base, 1),
        "threads": 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", nargs=4, metavar=("ARCH", "ROWS", "TOKENS", "CKPT"))
    args = parser.parse_args()
    if args.one:
        arch, rows, tokens, ckpt = args.one
        result = run_one(arch, int(rows), int(tokens), ckpt == "1", args.steps)
        print(json.dumps(result), flush=True)
        return
    print(f"command: {command()}")
    results = []
    for arch, rows, tokens in WORKLOADS:
        for ckpt in (False, True):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.grad_checkpointing",
                "--steps",
                str(args.steps),
            ]
            cmd += ["--one", arch, str(rows), str(tokens), "1" if ckpt else "0"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"{'model':<16} {'rows×tokens':>12} {'ckpt':>5} {'step s':>7} {'peak MiB':>9} {'step MiB':>9}"
    )
    for r in results:
        shape = f"{r['rows']}×{r['tokens_per_row']}"
        print(
            f"{r['model']:<16} {shape:>12} {str(r['gradient_checkpointing']):>5}"
            f" {r['step_s']:>7.3f} {r['peak_rss_mib']:>9.1f} {r['step_mib']:>9.1f}"
        )
    for off, on in zip(results[::2], results[1::2], strict=True):
        print(
            json.dumps(
                {
                    "bench": "grad_checkpointing_ratio",
                    "model": off["model"],
                    "step_mib_ratio": round(on["step_mib"] / off["step_mib"], 3),
                    "peak_rss_ratio": round(on["peak_rss_mib"] / off["peak_rss_mib"], 3),
                    "step_time_ratio": round(on["step_s"] / off["step_s"], 3),
                }
            )
        )
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
