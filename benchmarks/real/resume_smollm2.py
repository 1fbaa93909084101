"""Resume on the real model: a LoRA reward model on SmolLM2 trained 3 steps without a stop, and
the same run killed after its step-2 checkpoint and resumed, must end with equal weights. Prints
the checkpoint's size (frozen weights are not written) and the largest weight difference.

    python -m benchmarks.real.resume_smollm2 [--steps 3]

One JSON line is appended to runs/real/results.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from benchmarks.common import emit
from benchmarks.real.realdata import hh_split, model_dir


class Killed(Exception):
    """Raised right after the checkpoint the run is to be killed at."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/resume_smollm2"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from safetensors.torch import load_file

    transformers.logging.set_verbosity_error()
    from rlhfkit.algos.rm import RMConfig, train
    from rlhfkit.config import load_config
    from rlhfkit.engine import Engine

    train_file, _, _ = hh_split(Path("runs/real_split"))
    shutil.rmtree(args.out, ignore_errors=True)

    def cfg(name: str) -> RMConfig:
        return load_config(
            RMConfig,
            preset="rm_smollm2_lora",
            overrides=[
                f"model.name_or_path={model_dir()}",
                f"out_dir={args.out / name}",
                f"data.train={train_file}",
                "data.validation=null",
                "data.max_length=128",
                "data.max_prompt_length=64",
                f"max_steps={args.steps}",
                "eval_every=0",
                "engine.checkpoint_every=1",
                "engine.resume=true",
                "engine.mixed_precision='no'",
            ],
        )

    t = time.perf_counter()
    full = train(cfg("uninterrupted"))
    kill_at = args.steps - 1
    save = Engine.save

    def save_then_die(self: Engine, step: int, state: dict) -> Path:
        path = save(self, step, state)
        if step == kill_at:
            raise Killed
        return path

    Engine.save = save_then_die
    try:
        train(cfg("resumed"))
    except Killed:
        pass
    finally:
        Engine.save = save
    checkpoint = args.out / "resumed" / "checkpoints" / f"step_{kill_at:08d}"
    size = sum(f.stat().st_size for f in checkpoint.iterdir())
    resumed = train(cfg("resumed"))
    a = load_file(str(full.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    emit(
        {
            "bench": "resume_smollm2",
            "steps": args.steps,
            "killed_after_step": kill_at,
            "checkpoint_mib": round(size / 2**20, 1),
            "tensors": len(a),
            "max_abs_weight_difference": max(float((a[k] - b[k]).abs().max()) for k in a),
            "score_offset_equal": full.metrics["rm/score_offset"]
            == resumed.metrics["rm/score_offset"],
            "wall_s": round(time.perf_counter() - t, 1),
        },
        Path("runs/real/results.jsonl"),
        indent=True,
    )
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
