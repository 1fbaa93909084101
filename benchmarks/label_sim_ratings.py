"""How noisy the simulated annotators' ratings are, beside their comparisons, on the simulated
world's own preference pairs (replies written by the behaviour sampler, gold scores known).

1. The world (`make_world`, seed S) and its three annotators (`annotators_from_manifest`).
2. Both replies of the first N training pairs, each rated by every annotator
   (`rlhfkit.sim.ratings.rate`, one seeded stream) on thumbs, Likert 1–5 and Likert 1–7.
3. Per scale: how often a rating's KTO label (`rlhfkit.label.scales.label_rule`, the default
   rule) agrees with the sign of the gold score, the annotators' exact agreement, Krippendorff's
   α (ordinal for Likert, nominal for thumbs) and Fleiss' κ (thumbs), with the app's own
   functions (`rlhfkit.label.agreement`).
4. For reference, the same annotators' comparisons of the same pairs, in expectation: how often
   they pick the gold-better reply, and how often two of them agree
   (`rlhfkit.sim.annotators.expected_agreement`).

    python -m benchmarks.label_sim_ratings [--out runs/label_sim_ratings] [--seed 0] [-n 2000]

Writes OUT/report.json and prints it. CPU only, seconds after the world is made.
"""

from __future__ import annotations

import argparse
import json
import random
from itertools import combinations
from pathlib import Path

from rlhfkit.label.agreement import fleiss_kappa, krippendorff_alpha
from rlhfkit.label.scales import THUMBS, label_rule
from rlhfkit.sim import make_world
from rlhfkit.sim.annotators import expected_agreement
from rlhfkit.sim.feedback import annotators_from_manifest
from rlhfkit.sim.ratings import rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/label_sim_ratings"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", type=int, default=2000, help="training pairs to rate (both replies)")
    args = parser.parse_args()

    # 1. the world and its annotators
    world = args.out / "world"
    if not (world / "manifest.json").exists():
        make_world(world, seed=args.seed)
    annotators = annotators_from_manifest(world)
    lines = (world / "preferences" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    pairs = [json.loads(line) for line in lines[: args.n]]
    replies = [
        (row[side], row["meta"][f"{side}_gold"]) for row in pairs for side in ("chosen", "rejected")
    ]

    # 2.–3. every annotator rates every reply, per scale
    report: dict = {"seed": args.seed, "pairs": len(pairs), "replies": len(replies),
                    "annotators": [a.name for a in annotators], "scales": {}}  # fmt: skip
    rng = random.Random(f"label-sim-ratings-{args.seed}")
    for scale in ("thumbs", "1-5", "1-7"):
        to_label, rule = label_rule(scale)
        units = [
            [rate(a, gold, reply, scale, rng.random()) for a in annotators]
            for reply, gold in replies
        ]
        numeric = [[THUMBS[v] if isinstance(v, str) else v for v in unit] for unit in units]
        labels = [
            (to_label(v), gold)
            for unit, (_, gold) in zip(numeric, replies, strict=True)
            for v in unit
        ]
        decided = [(label, gold) for label, gold in labels if label is not None and gold != 0]
        same = [a == b for unit in numeric for a, b in combinations(unit, 2)]
        report["scales"][scale] = {
            "rule": rule,
            "label_agrees_with_gold_sign": sum(lab == (g > 0) for lab, g in decided) / len(decided),
            "ratings_with_a_label_and_a_nonzero_gold": len(decided),
            "labels_dropped_at_the_middle": sum(label is None for label, _ in labels) / len(labels),
            "exact_agreement": sum(same) / len(same),
            "krippendorff_alpha": krippendorff_alpha(
                numeric, "nominal" if scale == "thumbs" else "ordinal"
            ),
            "fleiss_kappa": fleiss_kappa(numeric) if scale == "thumbs" else None,
        }

    # 4. the comparisons of the same pairs, in expectation
    scored = [(r["meta"]["chosen_gold"], r["chosen"], r["meta"]["rejected_gold"], r["rejected"])
              for r in pairs if r["meta"]["chosen_gold"] != r["meta"]["rejected_gold"]]  # fmt: skip
    better = [
        a.p_first(*pair) if pair[0] > pair[2] else 1 - a.p_first(*pair)
        for pair in scored
        for a in annotators
    ]
    report["comparisons"] = {
        "pairs_with_a_gold_preference": len(scored),
        "gold_better_chosen": sum(better) / len(better),
        "expected_agreement": expected_agreement(scored, annotators),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
