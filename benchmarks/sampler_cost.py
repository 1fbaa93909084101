#!/usr/bin/env python
"""Cost of one sampling step: the per-row inverse-CDF sampler (`rollout.generate.sample_rows`,
rows seeded independently so a row's tokens do not depend on its batch or process) against the
exponential race it replaced (argmax p / E, E ~ Exp(1) from one shared generator), one JSON line
per shape. Also the once-per-rollout cost of the per-row uniforms (`row_uniforms`).

Shapes: (rows, vocabulary) = (64, 4096) the anchor workload, (64, 32000) a Llama-2-size
vocabulary, (16, 151936) Qwen2.5's. float32 logits, 1 torch thread, median of `--repeats`.

Usage: python -m benchmarks.sampler_cost [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from benchmarks.common import load_avg, median_us
from rlhfkit.rollout.generate import row_seeds, row_uniforms, sample_rows


def race(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The previous sampler (exponential race)."""
    probs = torch.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    for rows, vocab in ((64, 4096), (64, 32000), (16, 151936)):
        logits = torch.randn(rows, vocab, generator=g)
        u = torch.rand(rows, dtype=torch.float64, generator=g)
        seeds = row_seeds((0, 1), range(rows))
        line = {
            "bench": "sampler_cost",
            "rows": rows,
            "vocab": vocab,
            "inverse_cdf_us": median_us(partial(sample_rows, logits, u), args.repeats),
            "exponential_race_us": median_us(partial(race, logits, g), args.repeats),
            "uniforms_per_rollout_us_32_steps": median_us(
                partial(row_uniforms, seeds, 32, torch.device("cpu")), args.repeats
            ),
            "threads": 1,
            "load_avg_1min": load_avg(),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
