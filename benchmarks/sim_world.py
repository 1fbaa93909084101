"""Figures of the simulated world: generation time, sizes, agreement, gold scores per behaviour.

    python -m benchmarks.sim_world [--out DIR] [--seed N]

Writes the default-size world to DIR (a temporary folder by default) and prints: generation
time, file sizes, the annotators' calibrated temperature and measured agreement, how often the
gold-preferred reply is chosen, the gold-score distribution (mean / min / max / n) of each
behaviour the sampler wrote in preference pairs and SFT demonstrations, and token lengths of
prompts and replies under the world's tokenizer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from transformers import AutoTokenizer

from rlhfkit.sim import make_world


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sim_world_"))

    start = time.perf_counter()
    manifest = make_world(out, seed=args.seed)
    wall = time.perf_counter() - start
    print(f"world written to {out} in {wall:.2f} s (manifest: {manifest['generation_seconds']} s)")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"total size {total / 1e6:.2f} MB; rows: {manifest['counts']}")
    ann = manifest["annotators"]
    print(
        f"annotators: temperature {ann['temperature']:.3f}, target agreement {ann['target_agreement']}, "
        f"expected {ann['expected_agreement']:.3f}, measured {ann['measured_agreement']:.3f}; "
        f"gold-preferred reply chosen {ann['measured_gold_win_rate']:.3f} "
        f"(expected {ann['expected_gold_win_rate']:.3f})"
    )

    scores: dict[str, list[float]] = defaultdict(list)
    for row in _rows(out / "preferences/train.jsonl"):
        m = row["meta"]
        scores[m["chosen_behaviour"]].append(m["chosen_gold"])
        scores[m["rejected_behaviour"]].append(m["rejected_gold"])
    for row in _rows(out / "sft/train.jsonl"):
        scores[row["meta"]["behaviour"]].append(row["meta"]["gold"])
    print("\ngold score per sampled behaviour (preferences/train + sft/train replies)")
    print(f"{'behaviour':20s} {'n':>6s} {'mean':>7s} {'min':>7s} {'max':>7s}")
    for behaviour, values in sorted(scores.items(), key=lambda kv: -statistics.mean(kv[1])):
        print(
            f"{behaviour:20s} {len(values):6d} {statistics.mean(values):7.3f} "
            f"{min(values):7.2f} {max(values):7.2f}"
        )

    sft_rows = _rows(out / "sft/train.jsonl")
    ideal = sum(
        r["meta"]["gold"] == (0.5 if r["meta"]["family"] == "unknowable" else 1.0) for r in sft_rows
    )
    print(f"\nSFT behaviours: {manifest['sft_behaviours']}")
    print(f"SFT replies with the ideal behaviour: {ideal / len(sft_rows):.3f}")

    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    prompt_lens, reply_lens = [], []
    for row in sft_rows:
        prompt = row["prompt"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_lens.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        reply = row["response"] + tokenizer.eos_token
        reply_lens.append(len(tokenizer(reply, add_special_tokens=False)["input_ids"]))
    for name, lens in (("prompt (chat template)", prompt_lens), ("reply + eos", reply_lens)):
        q = statistics.quantiles(lens, n=20)
        print(f"tokens, {name}: mean {statistics.mean(lens):.1f}, p95 {q[-1]:.0f}, max {max(lens)}")
    print(f"tokenizer vocabulary: {len(tokenizer)}")


if __name__ == "__main__":
    main()
