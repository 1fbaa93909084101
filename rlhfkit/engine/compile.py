"""Opt-in `torch.compile` of the models' transformer blocks (`engine.compile: true`).

    engine.compile(policy, ref_policy, critic)   # after the models exist, before any copy

Implementation details and their sources:

1. Regional compilation: only the decoder blocks (the repeated layers: GPT-2 `h`, Llama
   `layers`, found as the largest `nn.ModuleList` of one class) are compiled, and all blocks of
   a class share one compiled function, so an N-layer model compiles one block's graph, not N
   (PyTorch's "regional compilation" recipe; torchtune compiles per layer too). Embeddings, the
   final norm, the chunked log-prob head (`core.head_logprobs`) and the loss math stay eager:
   the head's work is a few matmuls already, and the trainers' loss code branches on Python
   values.
2. Generation stays eager: a block called with a KV cache (any `transformers` `Cache` argument)
   runs its own forward, because the cache grows by one column per sampled token and would
   recompile; training, scoring and log-prob forwards (no cache) run compiled. The
   shared-prompt forwards of grouped batches (GRPO's and RLOO's G replies of a prompt,
   `models.prompt_sharing`) carry a cache too and stay eager, so under `engine.compile` those
   trainers run eager: sharing removes work, where compiled blocks did not speed GRPO up on
   this CPU (docs/scaling.md, "Against TRL").
3. Recompilation: `dynamic=True`, every dimension symbolic from the first call, so batches of
   any length and row count reuse one graph. Measured on a 3-block GPT-2, forward + backward over
   lengths 10, 13, 17, 9 (`benchmarks/compile_recompiles.py`, graphs after each batch):
   dynamic=True 1, 1, 1, 1; PyTorch's default automatic dynamic (static first, symbolic after
   the first change) 1, 2, 2, 2; static graphs on lengths padded to multiples of 16 (buckets)
   1, 1, 2, 2 and a new graph for every further bucket, with padding computed besides.
4. The platform check: before compiling anything, a two-operation function is compiled and run
   (`compile_problem`); if that fails (no C++ compiler for the CPU backend, no Triton on a GPU)
   the run prints one line and stays eager. A block whose own compilation fails later falls
   back to eager the same way, once, with one line.
5. Compile time is reported apart from step time: `compile_seconds()` is the process's total
   time spent compiling (torch._dynamo's own timers); the engine logs it as `perf/compile_s`
   with every metrics row, so step time minus compile time is the compiled step's cost.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["compile_blocks", "compile_problem", "compile_seconds", "compiled_graphs"]

DYNAMIC: bool | None = True  # see detail 3


def compile_problem(device: torch.device) -> str | None:
    """None when `torch.compile` works on `device`; otherwise the first line of why not."""
    try:
        with torch._inductor.config.patch(fx_graph_cache=False):
            probe = torch.compile(lambda x: torch.sin(x) * 2 + 1, dynamic=False)
            probe(torch.ones(8, device=device))
    except Exception as err:  # any failure means "not here": the reason is printed
        lines = [x for x in str(err).splitlines() if x.strip()]
        return (lines[0] if lines else type(err).__name__)[:300]
    return None


def decoder_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's repeated layers: the `nn.ModuleList` of one module class with the most
    parameters (None if it has none)."""
    best, best_size = None, 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        if len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = module, size
    return best


class _CompiledForward:
    """A block's forward: the class's shared compiled function unless a KV cache is passed."""

    def __init__(self, block: nn.Module, compiled: Callable[..., Any], say: Callable[[str], None]):
        self.block, self.compiled, self.say = block, compiled, say
        self.failed = False

    def __deepcopy__(self, memo: dict) -> _CompiledForward:  # the copy's block, same function
        return _CompiledForward(copy.deepcopy(self.block, memo), self.compiled, self.say)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        eager = type(self.block).forward
        if self.failed or _has_cache(args, kwargs):
            return eager(self.block, *args, **kwargs)
        try:
            return self.compiled(self.block, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compile failure: eager from now on (detail 4)
            if _is_compile_error(err):
                self.failed = True
                self.say(
                    f"engine.compile: {type(self.block).__name__} did not compile "
                    f"({type(err).__name__}); it runs eager"
                )
                return eager(self.block, *args, **kwargs)
            raise


def _is_compile_error(err: Exception) -> bool:
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported

    return isinstance(err, (BackendCompilerFailed, Unsupported, TorchRuntimeError))


def _has_cache(args: tuple, kwargs: dict) -> bool:
    from transformers.cache_utils import Cache

    return any(isinstance(a, Cache) for a in (*args, *kwargs.values()))


@functools.cache
def _compiled_forward(cls: type) -> Callable[..., Any]:
    """One compiled function per block class, shared by every block and model of that class."""
    return torch.compile(cls.forward, dynamic=DYNAMIC)


def compile_blocks(model: nn.Module, say: Callable[[str], None]) -> int:
    """Compile `model`'s decoder blocks in place (detail 1); returns how many were. Compile
    after every copy of the model is made: a deep copy keeps the compiled forwards."""
    blocks = decoder_blocks(model)
    if blocks is None:
        return 0
    compiled = _compiled_forward(type(blocks[0]))
    for block in blocks:
        block.forward = _CompiledForward(block, compiled, say)
    return len(blocks)


def compile_seconds() -> float:
    """Seconds this process has spent compiling (torch._dynamo's timers; 0 before any)."""
    from torch._dynamo.utils import calculate_time_spent

    return float(calculate_time_spent().get("total_wall_time", 0.0))


def compiled_graphs() -> int:
    """Graphs compiled so far in this process (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
