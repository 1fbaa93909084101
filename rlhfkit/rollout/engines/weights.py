"""The policy's weights as a rollout engine loads them, and the push every online trainer makes.

`policy_weights(policy)` yields (name, tensor) under the names of the policy's Hugging Face
checkpoint, whatever wraps it:
- DDP / Accelerate wrappers are unwrapped;
- a peft LoRA policy gives W + ΔW = W + (α/r)·B·A for every adapted layer (peft's
  `get_delta_weight`), computed beside the base weights: the trained model is never merged and
  unmerged in place (an unmerge W + Δ − Δ is not W in floating point, and would move the run);
  adapter tensors are left out, `base_layer.` is dropped from the names;
- FSDP2 (DTensor) parameters are gathered with `full_tensor()` (a collective: every process
  calls it; tested with 2 CPU processes, tests/test_distributed.py);
- DeepSpeed ZeRO-3 parameters (partitioned, `ds_id`) are gathered for the read with
  `deepspeed.zero.GatheredParameters` (written from DeepSpeed's documented API; not run here,
  where DeepSpeed is not installed);
- tied embeddings appear under both names, as in the checkpoint; engines skip the tied copy.

`sync_weights(engine, policy, version, is_main)` pushes when the engine's version is behind:
each process owns its colocated engine and pushes to it; with a shared server only the main
process pushes (the others still take part in the FSDP2 gathers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rlhfkit.engine import unwrap
from rlhfkit.rollout.engines.base import RolloutEngine

__all__ = ["policy_weights", "sync_weights"]


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)  # FSDP2 DTensor: gather the shards
    return (full() if full is not None else t).detach()


def _zero3_gathered(model: nn.Module) -> Any:
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


def policy_weights(policy: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    model = unwrap(policy)
    with _zero3_gathered(model):
        yield from _weights(model)


def _weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    get_base = getattr(model, "get_base_model", None)
    if get_base is None:
        for name, t in model.state_dict().items():
            yield name, _full(t)
        return
    base = get_base()
    deltas: dict[str, torch.Tensor] = {}
    for mod_name, mod in base.named_modules():
        if hasattr(mod, "get_delta_weight") and hasattr(mod, "base_layer"):
            if getattr(mod, "disable_adapters", False) or getattr(mod, "merged", False):
                continue
            for adapter in mod.active_adapters:
                if adapter in getattr(mod, "lora_A", {}):
                    delta = _full(mod.get_delta_weight(adapter))
                    key = f"{mod_name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    for name, t in base.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        t = _full(t)
        yield name, (t + deltas[name].to(t.dtype)) if name in deltas else t


def sync_weights(
    engine: RolloutEngine, policy: nn.Module, version: int, *, push: bool = True
) -> dict[str, float]:
    """Push the policy's weights when `engine` samples from an older version; returns
    `rollout/weights_version` and `time/weight_sync_s`. `push=False`: take part in the
    gathers only (a non-main process of a shared server)."""
    t0 = time.perf_counter()
    if engine.weights_version != version and not engine.exact:
        weights = list(policy_weights(policy))
        if push:
            engine.push_weights(weights, version)
        else:
            engine.weights_version = version
    elif engine.exact:
        engine.push_weights((), version)
    return {
        "rollout/weights_version": float(engine.weights_version),
        "time/weight_sync_s": time.perf_counter() - t0,
    }
