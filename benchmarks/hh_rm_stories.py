"""The real-data path end to end: a reward model from stories260K on HH-RLHF comparisons.

stories260K (llama2.c's) is a real pretrained tiny Llama (260K parameters, trained on children's
stories, vocabulary 512, no pad token); the helpful-online test split of Anthropic's HH-RLHF holds
1,137 real human comparisons. Neither is in the repository: both are read under
$RLHFKIT_DATA_DIR (`benchmarks.common.STORIES_DIR`, `HH_FILE`). The RM is trained on a split of
them (by prompt) and evaluated on the held-out rest. A 260K-parameter story model knows little
about helpfulness: the point is that reading HH transcripts, a tokenizer without a pad token, a
Llama body and the whole trainer run end to end, and that the figure is honest (chance is 50 %).

    python -m benchmarks.hh_rm_stories [--out runs/bench_hh] [--seed 0] [key=value ...]

Prints a JSON report (held-out accuracy, margin, ECE, the majority-length baseline, wall time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import HH_FILE, STORIES_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_hh"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="RMConfig key=value overrides")
    args = ap.parse_args()
    model, data = STORIES_DIR, HH_FILE
    if not model.is_dir() or not data.is_file():
        raise SystemExit(f"needs {model} and {data} (set RLHFKIT_DATA_DIR)")

    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.rm import RMConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.data import read_preferences, split_records

    cfg = load_config(
        RMConfig,
        overrides=[
            f"out_dir={args.out}",
            f"model.name_or_path={model}",
            f"data.train={data}",
            "data.format=hh",
            "data.on_error=skip",  # a few real rows are broken (empty or identical replies)
            "data.validation_fraction=0.2",
            "data.max_length=384",
            "data.max_prompt_length=256",
            "data.max_tokens=16384",
            "data.max_pairs=16",
            "optim.lr=1e-3",
            "optim.scheduler=cosine",
            "optim.warmup_steps=10",
            "epochs=2",
            "log_every=10",
            "engine.device=cpu",
            "engine.threads=2",
            "engine.resume=false",
            f"engine.seed={args.seed}",
            *args.overrides,
        ],
    )
    t = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t

    # A trivial baseline on the same held-out pairs: "the longer reply is better".
    pairs = read_preferences(data, "hh", on_error="skip").records
    _, held_out = split_records(pairs, (0.8, 0.2), seed=args.seed)
    longer = sum(len(p.chosen) > len(p.rejected) for p in held_out) / max(len(held_out), 1)
    m = result.metrics
    report = {
        "model": "stories260K (Llama, 260K parameters)",
        "train_pairs": len(pairs) - len(held_out),
        "held_out_pairs": m.get("eval/pairs"),
        "held_out_accuracy": round(m["eval/accuracy"], 4),
        "held_out_margin": round(m["eval/margin"], 4),
        "held_out_ece": round(m["eval/ece"], 4),
        "baseline_longer_reply_wins": round(longer, 4),
        "epochs": cfg.epochs,
        "wall_s": round(wall, 1),
        "model_dir": str(result.model_dir),
    }
    print(json.dumps(report, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
