"""Settings of the vLLM rollout engines (`rollout.vllm`): one block for the colocated engine
(`rollout.engine: vllm`) and the server (`rollout.engine: vllm_server`). Kept apart from the
engines themselves so `RolloutConfig` can hold it without importing vLLM."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhfkit.config import ConfigBase

__all__ = ["EngineName", "VLLMConfig"]

EngineName = Literal["local", "vllm", "vllm_server"]


class VLLMConfig(ConfigBase):
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The engine's weights and arithmetic. Match the trainer's precision: float32 with
    engine.mixed_precision=no, bfloat16 with bf16 (the IS correction absorbs what differs)."""
    max_model_len: int | None = Field(None, ge=8)
    """Longest prompt + reply the engine accepts (null: the model's context length)."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    """Share of GPU memory vLLM may take on a GPU (colocated with training: keep it below 1)."""
    cpu_kvcache_space_gib: int = Field(1, ge=1)
    """KV-cache memory on CPU, in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE)."""
    enforce_eager: bool = True
    """Run the model eagerly (no CUDA graphs / compile): starts in seconds; needed on CPU."""
    enable_prefix_caching: bool = True
    """Share the KV cache of identical prompt prefixes (the G samples of one prompt). The cache
    is reset after every weight push, so it never serves old weights."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine spans (vLLM tensor parallelism; 1 on CPU)."""
    url: str = "http://127.0.0.1:8000"
    """Where `rlhfkit rollout serve` listens (rollout.engine: vllm_server)."""
    timeout_s: float = Field(600.0, gt=0.0)
    """Longest wait for one server call (generate, push, health), in seconds."""
    weights_dir: str | None = None
    """Folder the trainer writes the policy's weights to for the server to load (a path both
    can read; null: RUN/rollout_weights)."""
