"""Shared pieces of the gradient-checkpointing tests: proof that activations were really
recomputed in the backward pass, not just that a flag was set.

A checkpointed decoder layer runs its forward twice per training step: once in the forward
pass (through the layer's `__call__`) and once more in the backward pass, where
`torch.utils.checkpoint` calls the layer's `forward` directly. So the layer's attention module
(`attn` in GPT-2, `self_attn` in Llama) runs one more time than the layer is called; without
checkpointing, exactly as often. Only calls with gradients on count (generation and scoring run
under `no_grad`, where nothing is checkpointed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


@dataclass
class Recomputes:
    layer_calls: int = 0  # decoder-layer forwards with gradients on
    layer_bodies: int = 0  # times a layer's attention ran with gradients on
    attentions: set[int] = field(default_factory=set)  # ids of the counted attention modules

    @property
    def recomputed(self) -> int:
        """Layer forwards run again in the backward pass."""
        return self.layer_bodies - self.layer_calls

    def pre_hook(self, module: nn.Module, args: object) -> None:
        if not torch.is_grad_enabled():
            return
        if _is_layer(module):
            self.layer_calls += 1
            self.attentions.add(id(_attention_of(module)))
        elif id(module) in self.attentions:
            self.layer_bodies += 1

    def attach(self, model: nn.Module) -> nn.Module:
        """Count the decoder layers of `model` (and no other model's); returns `model`."""
        for m in model.modules():
            if _is_layer(m):
                m.register_forward_pre_hook(self.pre_hook)
                _attention_of(m).register_forward_pre_hook(self.pre_hook)
        return model


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, GradientCheckpointingLayer)


def _attention_of(layer: nn.Module) -> nn.Module:
    attn = getattr(layer, "self_attn", None) or getattr(layer, "attn", None)
    if attn is None:
        raise AssertionError(f"{type(layer).__name__}: no attention module to count")
    return attn


@contextlib.contextmanager
def count_recomputes() -> Iterator[Recomputes]:
    """`Recomputes` over every decoder layer of every model that runs inside the block (a
    global module pre-hook)."""
    counts = Recomputes()
    handle = nn.modules.module.register_module_forward_pre_hook(counts.pre_hook)
    try:
        yield counts
    finally:
        handle.remove()


@contextlib.contextmanager
def saved_bytes() -> Iterator[list[int]]:
    """Bytes of the tensors autograd keeps for the backward pass inside the block (those saved
    inside a checkpointed layer go through checkpoint's own hooks and are dropped instead)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total
