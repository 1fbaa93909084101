#!/usr/bin/env python
"""The tanh GELU forward, PyTorch's fused kernel (`F.gelu(approximate="tanh")`) against
`models.activations.gelu_tanh` (the same function in cache-sized pieces), and the backward
both share (`gelu_backward`), for the anchor workload's MLP activations: a training or scoring
forward (64 rows × 64 tokens × 1,024), a prefill (64 × 32 × 1,024) and a decode step
(64 × 1 × 1,024). `tanh_fwd_ms`: `torch.tanh` over the same tensor, for scale (what one
vectorised elementwise pass costs). float32, one torch thread, median of `--repeats` calls
after one warm call, glibc's allocator tuned as the trainers tune it
(`engine.keep_freed_memory`: without it a fresh 16 MiB output page-faults on some calls and the
figures turn bimodal);
`max_abs_err_*`: the largest difference from the float64 definition on that tensor.

    python -m benchmarks.gelu_cost [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

from benchmarks.common import command, load_avg, median_us, positive
from rlhfkit.engine import keep_freed_memory
from rlhfkit.models.activations import gelu_tanh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=positive, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as every trainer's Engine does: no page faults per fresh tensor
    g = torch.Generator().manual_seed(0)
    for shape in ((64, 64, 1024), (64, 32, 1024), (64, 1, 1024)):
        x, grad = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        x64 = x.double()
        exact = 0.5 * x64 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
        fused = median_us(lambda x=x: F.gelu(x, approximate="tanh"), args.repeats)
        pieces = median_us(lambda x=x: gelu_tanh(x), args.repeats)
        tanh = median_us(lambda x=x: torch.tanh(x), args.repeats)
        backward = median_us(
            lambda x=x, grad=grad: torch.ops.aten.gelu_backward(grad, x, approximate="tanh"),
            args.repeats,
        )
        print(json.dumps({
            "shape": list(shape), "fused_fwd_ms": round(fused / 1e3, 3),
            "pieces_fwd_ms": round(pieces / 1e3, 3), "backward_ms": round(backward / 1e3, 3),
            "tanh_fwd_ms": round(tanh / 1e3, 3),
            "max_abs_err_fused": float((F.gelu(x, approximate="tanh").double() - exact).abs().max()),
            "max_abs_err_pieces": float((gelu_tanh(x).double() - exact).abs().max()),
            "load_avg": load_avg(), "command": command(),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
