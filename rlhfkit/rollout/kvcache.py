"""A KV cache that is written in place: one buffer per layer for the whole rollout.

Hugging Face's `DynamicCache` grows each layer's keys and values by `torch.cat` at every decoded
token, so step t copies the whole (B, heads, P + t, head_dim) cache again: over R tokens that is
O(R · (P + R)) memory traffic per layer, which on CPU took more time than the model's matmuls
in the anchor workload's generation (16 × 4 prompts, 32 new tokens; `torch.profiler`, 2026-12-02).
Here each layer allocates (B, heads, capacity, head_dim) once, at its first update, writes the new
positions into it and hands attention a view of the filled prefix, so the keys and values the
model attends to are the same numbers in the same order as with `DynamicCache`
(`tests/test_rollout.py` checks sampled tokens and log-probs equal).
"""

from __future__ import annotations

from functools import partial

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["PreallocatedCache"]


class _PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose `keys` / `values` are views into one preallocated buffer."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, key_dim = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(batch, heads, self.capacity, key_dim)
        self.value_buffer = value_states.new_empty(
            batch, value_states.shape[1], self.capacity, value_states.shape[-1]
        )
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(
                f"PreallocatedCache: {end} positions do not fit the capacity {self.capacity}"
            )
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Row b becomes a copy of row `indices[b]` (the batch may grow: a prompt prefilled
        once serves each of its samples); `Cache.batch_select_indices` calls it per layer."""
        if self.is_initialized:
            self.key_buffer = self.key_buffer.index_select(0, indices)
            self.value_buffer = self.value_buffer.index_select(0, indices)
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]


class PreallocatedCache(DynamicCache):
    """`DynamicCache` for one generation of at most `capacity` positions (prompt + new tokens)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.layer_class_to_replicate = partial(_PreallocatedLayer, capacity)
