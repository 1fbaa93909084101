"""DPO training throughput on the anchor workload (`benchmarks/README.md`, TRL's DPO row).

The workload: the anchor assets' GPT-2 policy (4 layers, d = 256, random init) on
`preferences.jsonl`, 8 pairs per optimiser step, max length 128, β = 0.1, sigmoid loss, a frozen
reference (the initial policy), 2 torch threads, fp32 (bf16 autocast as a side row). This runs
`rlhfkit.algos.dpo.train` itself (the code `rlhfkit dpo` runs) and prints one JSON line per
(precision, reference mode) with the fields the TRL side of the comparison reports: median s/step after 2 warm-up
steps, pairs/s, non-padding tokens/s, peak RSS (MiB, the whole process).

Reference modes:
- `cached` (rlhfkit's default, TRL's `precompute_ref_log_probs=True`): the reference log-probs of
  every pair are computed once before the first step. The step then runs the policy only, so
  the JSON line also gives the one-off reference pass (`ref_precompute_s`, over all 1,024
  pairs) and `pairs_per_s_with_reference`: pairs/s with that pass spread over the pairs, i.e.
  one epoch's throughput — the fair comparison with TRL's default, which runs the reference
  every step.
- `live`: a frozen reference copy runs beside the policy every step (TRL's default).

Step times are the differences between consecutive `metrics.jsonl` rows (logged every step, like
TRL's `on_step_end` timer). Each run is its own process (peak RSS is per process).

    python -m benchmarks.dpo_throughput [--assets DIR] [--steps 40]
        [--precision fp32 bf16] [--reference cached live]

(the assets are built into runs/bench_assets by `benchmarks.assets` on first use).

The texts are TRL's (`data.prompt_template=raw`: prompt + reply + EOS as they are). Differences
from TRL's run, on purpose: a pair's two replies share one copy of the prompt
(`data.share_prompt`, exact), the LM head runs at response positions only, and batches are
length-sorted within the epoch (`data.max_pairs`). Dropout is off in both (TRL's
`disable_dropout=True` default, rlhfkit's too).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import engine_settings, offline_reference_main, timed_steps

PAIRS = 8


def run_one(
    assets: Path, steps: int, warmup: int, precision: str, reference: str, threads: int
) -> dict:
    import torch

    torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    import rlhfkit.algos.dpo.trainer as trainer_module
    from rlhfkit.algos.dpo import DPOConfig, train

    ref_seconds = []
    real = trainer_module.reference_logps

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = real(*args, **kwargs)
        ref_seconds.append(time.perf_counter() - t)
        return out

    trainer_module.reference_logps = timed
    out = tempfile.mkdtemp(prefix="rlhfkit_dpo_bench_")
    cfg = DPOConfig.model_validate(
        {
            "out_dir": out,
            "model": {"name_or_path": str(assets / "policy"), "dtype": "float32"},
            "tokenizer": str(assets / "tokenizer"),
            "data": {
                "train": str(assets / "preferences.jsonl"),
                "validation_fraction": 0.0,
                "max_length": 128,
                "max_tokens": 1_000_000,  # no token cap: exactly 8 pairs per step
                "max_pairs": PAIRS,
                "prompt_template": "raw",
            },
            "optim": {"lr": 1e-6},  # TRL DPOConfig default
            "beta": 0.1,
            "loss_type": "sigmoid",
            "reference": reference,
            "max_steps": steps,
            "log_every": 1,
            "engine": engine_settings(threads, precision),
        }
    )
    timing = timed_steps(train, cfg, "loss/dpo", warmup, PAIRS, "preference pairs")
    med = timing["s_per_step"]
    ref_s = sum(ref_seconds)
    n_pairs = sum(1 for _ in open(assets / "preferences.jsonl", encoding="utf-8"))
    result = {
        "trainer": "rlhfkit.algos.dpo",
        "variant": precision,
        "reference": reference,
        "threads": threads,
        **timing,
    }
    if reference == "cached":
        per_pair = ref_s / n_pairs
        result["ref_precompute_s"] = round(ref_s, 2)
        result["ref_precompute_pairs"] = n_pairs
        result["pairs_per_s_with_reference"] = round(PAIRS / (med + PAIRS * per_pair), 2)
    return result


def main() -> None:
    offline_reference_main("benchmarks.dpo_throughput", __doc__, run_one, ["fp32", "bf16"])


if __name__ == "__main__":
    main()
