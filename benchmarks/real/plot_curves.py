"""The training curves of the SmolLM2 online runs, from the JSON lines their benchmarks wrote:
PPO's reward-model score and KL per iteration, GRPO's and RLOO's batch accuracy and KL.

    python -m benchmarks.real.plot_curves [--results runs/real/results.jsonl] [--out docs/img/real_curves.png]

For each benchmark the last line of the longest run is drawn (PPO: 36 iterations of 16 replies).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # file output only
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (  # benchmark, y label of its score, title
    ("ppo_smollm2", "RM score (normalised)", "PPO (LoRA) on HH prompts"),
    ("grpo_smollm2", "batch accuracy", "GRPO (LoRA) on arithmetic"),
    ("rloo_smollm2", "batch accuracy", "RLOO (LoRA) on arithmetic"),
)


def longest_runs(path: Path) -> dict[str, dict]:
    """Per benchmark, the last line among those with the most curve points."""
    best: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        curve = row.get("curve") or row.get("train_curve")
        if not curve:
            continue
        name = row["bench"]
        if name not in best or len(curve) >= len(best[name]["points"]):
            best[name] = {"points": curve, "command": row.get("command", "")}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("runs/real/results.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("docs/img/real_curves.png"))
    args = ap.parse_args()
    runs = longest_runs(args.results)
    shown = [p for p in PANELS if p[0] in runs]
    if not shown:
        raise SystemExit(f"{args.results}: no PPO / GRPO / RLOO curve; run the benchmarks first")
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), squeeze=False)
    for ax, (name, label, title) in zip(axes[0], shown, strict=True):
        points = runs[name]["points"]
        its = [p["it"] for p in points]
        ax.plot(its, [p["score"] for p in points], color="tab:blue", marker=".", label=label)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label, color="tab:blue")
        kl = ax.twinx()
        kl.plot(its, [p["kl"] for p in points], color="tab:red", marker=".", label="KL")
        kl.set_ylabel("KL to start (nats / reply)", color="tab:red")
        ax.set_title(title, fontsize=10)
        print(f"{name}: {len(points)} iterations  ({runs[name]['command']})")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
