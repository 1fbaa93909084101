"""The engine: the one place that sets up devices, precision, processes, seeding, run
directories, metrics, optimisers and checkpoints. Every trainer runs through it, so every trainer
runs under `accelerate launch` with DDP (2 processes equal 1 process at the same global batch:
tests/test_distributed.py, on CPU/gloo). FSDP and DeepSpeed ZeRO configs are shipped
(`rlhfkit/configs/accelerate/`) but have not run on a GPU; see docs/scale.md for what works
where."""

from rlhfkit.engine.checkpoint import (
    atomic_write_text,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rlhfkit.engine.engine import Engine, EngineConfig, autocast, launched_processes
from rlhfkit.engine.memory import keep_freed_memory
from rlhfkit.engine.metrics import MetricsLogger, TokenRate
from rlhfkit.engine.modes import eval_mode
from rlhfkit.engine.offline import OfflineLoop, StepOutcome, resumed_step
from rlhfkit.engine.optim import OptimConfig, build_optimizer, build_scheduler
from rlhfkit.engine.rundir import RunDir
from rlhfkit.engine.steps import (
    LossThunk,
    NonFiniteError,
    accumulate,
    gathered,
    grad_norm,
    optimizer_step,
    unwrap,
    wrapped_forward,
)

__all__ = [
    "Engine",
    "EngineConfig",
    "LossThunk",
    "MetricsLogger",
    "NonFiniteError",
    "OfflineLoop",
    "OptimConfig",
    "RunDir",
    "StepOutcome",
    "TokenRate",
    "accumulate",
    "atomic_write_text",
    "autocast",
    "build_optimizer",
    "build_scheduler",
    "gathered",
    "capture_rng_state",
    "eval_mode",
    "grad_norm",
    "keep_freed_memory",
    "latest_checkpoint",
    "launched_processes",
    "load_checkpoint",
    "optimizer_step",
    "restore_rng_state",
    "resumed_step",
    "save_checkpoint",
    "unwrap",
    "wrapped_forward",
]
