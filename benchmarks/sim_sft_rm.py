"""SFT, then a reward model on the simulated world's noisy annotator labels; held-out figures.

What it reports, on held-out comparisons (`preferences/test.jsonl`: items and phrasings never
seen in training; and `preferences/validation.jsonl`: same distribution as training):

- `rm_label_agreement`: how often the RM prefers the reply the (noisy) annotator chose;
- `ceiling`: how often the gold scorer itself prefers that reply — the most any model of the
  true preference can agree with these noisy labels; `label_vs_ceiling` = the ratio (goal ≥ 0.9);
- `rm_gold_agreement`: how often the RM ranks higher the reply the gold scorer ranks higher
  (pairs with a gold tie left out; goal ≥ 0.85);
- wall time of each stage on this machine.

    python -m benchmarks.sim_sft_rm [--out runs/bench_sim] [--seed 0] [--size micro]
        [--n-sft 2000] [--n-pref 2000] [--n-pref-eval 200] [sft.key=value ...] [rm.key=value ...]

Runs `rlhfkit.algos.sft.train` and `rlhfkit.algos.rm.train` with the shipped presets
(`sft_sim`, `rm_sim`), only paths overridden, so the figures are what the presets give.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_sim"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default=None, help="tiny model size (default: the preset's)")
    ap.add_argument("--skip-sft", action="store_true", help="reuse OUT/sft/model")
    ap.add_argument("--n-sft", type=int, default=None, help="world demonstrations (default 2000)")
    ap.add_argument("--n-pref", type=int, default=None, help="world training pairs (default 2000)")
    ap.add_argument(
        "--n-pref-eval",
        type=int,
        default=None,
        help="pairs in each of preferences/validation and preferences/test (default 200)",
    )
    ap.add_argument("overrides", nargs="*", help="rm.key=value or sft.key=value overrides")
    args = ap.parse_args()

    import transformers

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos import rm, sft
    from rlhfkit.config import load_config
    from rlhfkit.sim.make import make_world

    out = args.out
    world = out / "sim"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (world / "manifest.json").is_file():
        sizes = {
            "n_sft": args.n_sft,
            "n_pref": args.n_pref,
            "n_pref_val": args.n_pref_eval,
            "n_pref_test": args.n_pref_eval,
        }
        make_world(world, seed=args.seed, **{k: v for k, v in sizes.items() if v is not None})
    manifest = json.loads((world / "manifest.json").read_text())
    timings["world_s"] = time.perf_counter() - t

    sft_over = [o[4:] for o in args.overrides if o.startswith("sft.")]
    rm_over = [o[3:] for o in args.overrides if o.startswith("rm.")]
    seed = f"engine.seed={args.seed}"
    sft_cfg = load_config(
        sft.SFTConfig,
        preset="sft_sim",
        overrides=[
            f"out_dir={out / 'sft'}",
            f"tokenizer={world / 'tokenizer'}",
            f"data.train={world / 'sft/train.jsonl'}",
            f"data.validation={world / 'sft/validation.jsonl'}",
            "engine.resume=false",
            seed,
            *([f"model.name_or_path=tiny:gpt2-{args.size}"] if args.size else []),
            *sft_over,
        ],
    )
    t = time.perf_counter()
    if args.skip_sft:
        sft_model, sft_metrics = out / "sft" / "model", {}
    else:
        result = sft.train(sft_cfg)
        sft_model, sft_metrics = result.model_dir, result.metrics
    timings["sft_s"] = time.perf_counter() - t

    rm_cfg = load_config(
        rm.RMConfig,
        preset="rm_sim",
        overrides=[
            f"out_dir={out / 'rm'}",
            f"model.name_or_path={sft_model}",
            f"data.train={world / 'preferences/train.jsonl'}",
            f"data.validation={world / 'preferences/test.jsonl'}",
            "engine.resume=false",
            seed,
            *rm_over,
        ],
    )
    t = time.perf_counter()
    rm_result = rm.train(rm_cfg)
    timings["rm_s"] = time.perf_counter() - t

    # the same-distribution validation split, scored by the saved (normalised) model
    t = time.perf_counter()
    val = _evaluate_folder(rm_result.model_dir, world / "preferences/validation.jsonl", rm_cfg)
    timings["eval_s"] = time.perf_counter() - t

    test = rm_result.metrics
    report = {
        "seed": args.seed,
        "model": sft_cfg.model.name_or_path,
        "world": {
            k: manifest["sizes"][k] for k in ("n_sft", "n_pref", "n_pref_val", "n_pref_test")
        },
        "annotators": {
            k: manifest["annotators"][k]
            for k in ("target_agreement", "measured_agreement", "measured_gold_win_rate")
            if k in manifest["annotators"]
        },
        "sft": {k: v for k, v in sft_metrics.items() if k.startswith("eval/")},
        "test_held_out": _summary(test),
        "validation": _summary(val),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    print(json.dumps(report, indent=2))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _summary(m: dict) -> dict:
    ceiling = m.get("eval/label_ceiling")
    acc = m["eval/accuracy"]
    return {
        "pairs": m["eval/pairs"],
        "rm_label_agreement": round(acc, 4),
        "ceiling": None if ceiling is None else round(ceiling, 4),
        "label_vs_ceiling": None if not ceiling else round(acc / ceiling, 4),
        "rm_gold_agreement": None
        if "eval/gold_agreement" not in m
        else round(m["eval/gold_agreement"], 4),
        "gold_pairs": m.get("eval/gold_pairs"),
        "ece": round(m["eval/ece"], 4),
        "margin": round(m["eval/margin"], 4),
    }


def _evaluate_folder(model_dir: Path, pairs_file: Path, cfg) -> dict:
    import torch

    from rlhfkit.algos.rm import gold_gaps_of, pair_metrics, score_pairs
    from rlhfkit.data import encode_pairs, read_preferences
    from rlhfkit.models import load_reward_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    pairs = read_preferences(pairs_file).records
    items = encode_pairs(tok, pairs, cfg.data.max_length, cfg.data.max_prompt_length)
    model = load_reward_model(model_dir)
    idx, chosen, rejected = score_pairs(
        model, items, tok.pad_token_id, cfg.data.max_tokens, torch.device("cpu")
    )
    order = torch.argsort(idx)
    return pair_metrics(chosen[order], rejected[order], gold_gaps_of(pairs))


if __name__ == "__main__":
    main()
