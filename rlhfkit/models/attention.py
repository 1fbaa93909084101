"""Scaled-dot-product attention that runs bf16/fp16 inputs in float32 on CPU.

On CPU, PyTorch's flash-attention kernel is several times slower in bf16 than in float32: on the
anchor reward-model workload (16 rows of ≈ 111 tokens, 4 heads of 64) its backward took 13.7 ms
per layer in bf16 against 3.5 ms in float32, and in a micro-benchmark bf16 inputs upcast around
the kernel ran forward + backward in 7.95 ms instead of 14.5 ms. Under bf16 autocast on CPU,
attention was the slowest op of a training step and made bf16 *slower* than float32 (RM step
0.152 s bf16 vs 0.125 s with this change, `benchmarks/rm_throughput.py`). The matmuls around it
keep bf16; attention in float32 is also the more precise choice.

`sdpa_fp32_on_cpu` is registered with transformers' `AttentionInterface` (and the SDPA mask
builder with `AttentionMaskInterface`) as `"rlhfkit_sdpa"`; `use_fp32_cpu_attention(model)`
switches a model whose attention is `"sdpa"` to it. On GPUs, and for float32 inputs, it is
exactly transformers' `"sdpa"`. `attention(...)` is the same rule for code that calls
`F.scaled_dot_product_attention` itself (`models.partial`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = ["ATTENTION_NAME", "SDPA_NAMES", "attention", "block_mask", "use_fp32_cpu_attention"]

ATTENTION_NAME = "rlhfkit_sdpa"
SDPA_NAMES = ("sdpa", ATTENTION_NAME)  # attention implementations that take SDPA's bool masks
_LOW = (torch.bfloat16, torch.float16)


def _upcast(query: torch.Tensor) -> bool:
    return query.device.type == "cpu" and query.dtype in _LOW


def _float32(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Float32 copies of the inputs (an additive mask too; a boolean one stays as it is)."""
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    return query.float(), key.float(), value.float(), mask


def sdpa_fp32_on_cpu(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' `sdpa_attention_forward`, computed in float32 when the inputs are bf16/fp16
    on CPU (the output is cast back)."""
    if not _upcast(query):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(
            module, *_float32(query, key, value, attention_mask), **kwargs
        )
    return out.to(query.dtype), weights


AttentionInterface.register(ATTENTION_NAME, sdpa_fp32_on_cpu)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` with the same float32-on-CPU rule."""
    if not _upcast(query):
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    q, k, v, mask = _float32(query, key, value, attn_mask)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.to(query.dtype)


def use_fp32_cpu_attention(model: nn.Module) -> nn.Module:
    """Switch `model` (a transformers model) from "sdpa" to "rlhfkit_sdpa"; any other attention
    implementation is left alone. Returns the model."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION_NAME)
    return model


def block_mask(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, T) bool "query i may attend to key j" → the (B, 1, T, T) mask transformers passes
    to attention unchanged: boolean for SDPA; additive (0 / the minimum of `dtype`, or of the
    autocast dtype when autocast is on) for other kernels, which add it to the logits. Used for
    packed rows (`data.shared_prompt`) by the reward model and DPO."""
    allowed = allowed[:, None].bool()
    if attn_implementation in SDPA_NAMES:
        return allowed
    if torch.is_autocast_enabled(allowed.device.type):
        dtype = torch.get_autocast_dtype(allowed.device.type)
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
