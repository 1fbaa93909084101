"""KTO training throughput on the anchor workload (`benchmarks/README.md`; TRL's side is
TRL 1.16's `KTOTrainer` on the same rows, in its own environment).

The workload, as TRL's side builds it: the anchor assets' GPT-2 policy (4 layers, d = 256,
random init) and its tokenizer; `preferences.jsonl` turned into unpaired rows, each pair giving
its chosen reply as a desirable example and its rejected reply as an undesirable one,
interleaved (2,048 rows, half of each: λ_D = λ_U = 1 is inside the paper's range); 8 examples
per optimiser step, max length 128, β = 0.1, lr 1e-6 (TRL `KTOConfig` defaults), a frozen
reference (the initial policy), 2 torch threads, fp32 (bf16 autocast as a side row). This runs
`rlhfkit.algos.kto.train` itself (the code `rlhfkit kto` runs) and prints one JSON line per
(precision, reference mode) with the fields of TRL's line: median s/step after 2 warm-up steps,
examples/s, non-padding tokens/s, peak RSS (MiB, the whole process).

Reference modes:
- `cached` (rlhfkit's default, TRL's `precompute_ref_log_probs=True`): the reference log-probs
  of every example and of its mismatched pair are computed once before the first step; the
  line also gives that pass (`ref_precompute_s`, over all 2,048 examples) and
  `examples_per_s_with_reference` (one epoch's throughput with the pass spread over it).
- `live` (TRL's default, `precompute_ref_log_probs=False`): the reference runs every step.

Step times are the differences between consecutive `metrics.jsonl` rows (logged every step, like
TRL's `on_step_end` timer). Each run is its own process (peak RSS is per process).

    python -m benchmarks.kto_throughput [--assets DIR] [--steps 40]
        [--precision fp32 bf16] [--reference cached live]

Differences from TRL's run, on purpose (docs/dpo_bon.md, `rlhfkit kto`): the texts are TRL's
(`data.prompt_template=raw`: prompt + reply + EOS); an example's row holds its prompt once, its
reply and its mismatched reply (the KL term's, behind a block mask) where TRL runs a second
batch for the KL term; z₀ is estimated over the step's examples. `tokens_per_s` counts the
non-padding tokens of those rows (TRL's line counts its input tokens, KL batch excluded).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import engine_settings, offline_reference_main, timed_steps

EXAMPLES = 8


def unpaired_rows(assets: Path, out: Path) -> Path:
    """The anchor KTO rows (TRL's side reads the same): per pair (prompt, chosen, true) then
    (prompt, rejected, false), written as TRL's unpaired JSONL to out/kto.jsonl."""
    lines = []
    for line in open(assets / "preferences.jsonl", encoding="utf-8"):
        r = json.loads(line)
        lines.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        lines.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    path = out / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def run_one(
    assets: Path, steps: int, warmup: int, precision: str, reference: str, threads: int
) -> dict:
    import torch

    torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    import rlhfkit.update.reference as reference_module
    from rlhfkit.algos.kto import KTOConfig, train

    ref_seconds = []
    real = reference_module.reference_logps  # the cached reference pass, timed apart

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = real(*args, **kwargs)
        ref_seconds.append(time.perf_counter() - t)
        return out

    reference_module.reference_logps = timed
    work = Path(tempfile.mkdtemp(prefix="rlhfkit_kto_bench_"))
    data = unpaired_rows(assets, work)
    n_examples = sum(1 for _ in open(data, encoding="utf-8"))
    cfg = KTOConfig.model_validate(
        {
            "out_dir": str(work / "run"),
            "model": {"name_or_path": str(assets / "policy"), "dtype": "float32"},
            "tokenizer": str(assets / "tokenizer"),
            "data": {
                "train": str(data),
                "validation_fraction": 0.0,
                "max_length": 128,
                "max_tokens": 1_000_000,  # no token cap: exactly 8 examples per step
                "max_examples": EXAMPLES,
                "prompt_template": "raw",
            },
            "optim": {"lr": 1e-6},  # TRL KTOConfig default
            "beta": 0.1,
            "desirable_weight": 1.0,
            "undesirable_weight": 1.0,
            "reference": reference,
            "max_steps": steps,
            "log_every": 1,
            "engine": engine_settings(threads, precision),
        }
    )
    timing = timed_steps(train, cfg, "loss/kto", warmup, EXAMPLES, "unpaired examples")
    med = timing["s_per_step"]
    result = {
        "trainer": "rlhfkit.algos.kto",
        "algo": "kto",
        "variant": precision,
        "reference": reference,
        "threads": threads,
        **timing,
    }
    if reference == "cached":
        per_example = sum(ref_seconds) / n_examples
        result["ref_precompute_s"] = round(sum(ref_seconds), 2)
        result["ref_precompute_examples"] = n_examples
        result["examples_per_s_with_reference"] = round(
            EXAMPLES / (med + EXAMPLES * per_example), 2
        )
    return result


def main() -> None:
    offline_reference_main("benchmarks.kto_throughput", __doc__, run_one, ["fp32"])


if __name__ == "__main__":
    main()
