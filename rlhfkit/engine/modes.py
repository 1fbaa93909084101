"""`eval_mode`: a model (or several) in eval mode for a block, its own mode restored after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def eval_mode(*models: torch.nn.Module | None) -> Iterator[None]:
    """Put every given model (None: absent, skipped) in eval mode — no dropout, so what is
    measured or sampled is the model's own distribution — and restore each one's `.training`
    when the block ends, also when it raises (an evaluation that fails mid-way must not leave
    a trainer training without dropout). Only the top module's flag is read back: `train(b)`
    sets every submodule, as `model.train(was_training)` did."""
    modes = [(m, m.training) for m in models if m is not None]
    for model, _ in modes:
        model.eval()
    try:
        yield
    finally:
        for model, training in modes:
            model.train(training)
