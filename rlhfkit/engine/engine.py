"""`Engine`: Accelerate, seeding, the run directory, metrics, progress and checkpoints in one object.

A trainer does:

    engine = Engine(cfg.engine, cfg.out_dir, cfg)       # accelerator, seed, run dir, config.yaml
    policy, optimizer = engine.accelerator.prepare(policy, optimizer)
    state = engine.resume()                              # None, or the saved trainer state
    for step in ...:
        ...
        engine.log({"loss/policy": ...}, step)
        engine.save(step, {"data_position": ...})        # every `checkpoint_every` steps
    engine.close()

Run under `accelerate launch` the same code becomes DDP (tested on CPU with 2 processes; FSDP /
DeepSpeed configs are shipped but unchecked, docs/scale.md); on one CPU it is a plain loop. Only
the main process writes files.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from pydantic import BaseModel
from rich.console import Console
from torch.nn.attention import SDPBackend, sdpa_kernel

from rlhfkit.config import ConfigBase
from rlhfkit.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlhfkit.engine.compile import (
    compile_blocks,
    compile_problem,
    compile_seconds,
    compiled_graphs,
)
from rlhfkit.engine.memory import keep_freed_memory
from rlhfkit.engine.metrics import MetricsLogger
from rlhfkit.engine.optim import OptimConfig, build_optimizer, build_scheduler
from rlhfkit.engine.rundir import RunDir

T = TypeVar("T")


class EngineConfig(ConfigBase):
    seed: int = 0
    """Seed for Python, NumPy and torch; a run is reproducible from it on the same hardware."""
    device: Literal["auto", "cpu"] = "auto"
    """auto: the GPU when there is one (or what `accelerate launch` chose); cpu: force the CPU."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision for forward passes; log-prob math stays float32 either way."""
    threads: int | None = None
    """torch intra-op threads on CPU (null: torch's default, one per core)."""
    log_with: list[Literal["tensorboard", "wandb", "mlflow"]] = []
    """Extra metric trackers besides RUN/metrics.jsonl (which is always written)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep (older ones are deleted)."""
    resume: bool = True
    """Resume from RUN/checkpoints/latest when the run directory already has one."""
    compile: bool = False
    """`torch.compile` the models' transformer blocks for training and scoring forwards
    (generation stays eager; `engine.compile` module docstring). Compilation takes seconds to
    minutes at the first steps and again at the first change of sequence length, reported as
    `perf/compile_s`; where the platform cannot compile (no C++ compiler on a CPU) one line is
    printed and the run stays eager."""
    keep_freed_memory: bool = True
    """Linux/glibc: keep freed CPU memory in the process for reuse instead of returning it to
    the OS, so steps do not page-fault their tensors anew (`engine.memory`; reward-model steps
    ≈ 3 % faster on the anchor workload; RSS does not shrink after a peak)."""


def launched_processes() -> int:
    """How many processes the launcher started: WORLD_SIZE (`accelerate launch`, torchrun,
    DeepSpeed) or the MPI variables Accelerate also reads (`mpirun`); 1 without a launcher."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


class Engine:
    def __init__(self, cfg: EngineConfig, out_dir: str | Path, full_config: BaseModel):
        self.cfg = cfg
        if cfg.keep_freed_memory:
            keep_freed_memory()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        world = launched_processes()
        # a launcher started several processes on a host without a GPU: Accelerate joins them
        # (gloo) only when told `cpu`; otherwise each would run alone, as process 0 of 1
        cpu = cfg.device == "cpu" or (world > 1 and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=cfg.mixed_precision,
            log_with=list(cfg.log_with) or None,
            project_dir=str(out_dir),
        )
        if self.accelerator.num_processes != world:
            raise RuntimeError(
                f"the launcher started {world} processes but Accelerate joined "
                f"{self.accelerator.num_processes}"
            )
        self._warn_if_not_sharded()
        set_seed(cfg.seed)
        self.run = RunDir(out_dir)
        if self.is_main:
            self.run.create()
            self.run.save_config(full_config)
        if cfg.log_with:
            self.accelerator.init_trackers(
                "rlhfkit", config=_flat(full_config.model_dump(mode="json"))
            )
        self.metrics = MetricsLogger(self.run.metrics_file, self.accelerator, enabled=self.is_main)
        self._compile_problem: str | None = None  # "" once checked and fine
        self._compiled_blocks = 0
        self.console = Console(stderr=True, quiet=not self.is_main)

    def _warn_if_not_sharded(self) -> None:
        """Accelerate 1.16 applies FSDP / DeepSpeed only on GPUs (and other accelerators); on a
        CPU the same launch runs DDP. Say so rather than let a user believe the model is
        sharded."""
        kind = self.accelerator.distributed_type.value
        for flag, wanted in (
            ("ACCELERATE_USE_FSDP", "FSDP"),
            ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"),
        ):
            if os.environ.get(flag, "false").lower() == "true" and kind != wanted:
                self.accelerator.print(
                    f"warning: the launch asked for {wanted} but Accelerate runs {kind} here "
                    "(FSDP / DeepSpeed need GPUs): every process holds the whole model"
                )

    # -- facts about the processes -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    # -- training ------------------------------------------------------------------------------
    def prepare_trainable(
        self, model: torch.nn.Module, optim: OptimConfig, total_steps: int
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        """(model, optimizer, scheduler) of a model to train: the configured optimiser and
        schedule over `total_steps`, the model and optimiser prepared by Accelerate (the model
        in its distributed wrapper), the scheduler registered for checkpoints but not prepared
        (a prepared scheduler steps once per process)."""
        optimizer = build_optimizer(model.parameters(), optim)
        scheduler = build_scheduler(optimizer, optim, total_steps)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.accelerator.register_for_checkpointing(scheduler)
        return model, optimizer, scheduler

    # -- compilation ---------------------------------------------------------------------------
    def compile(self, *models: torch.nn.Module | None) -> None:
        """With `compile: true`, compile the transformer blocks of `models` in place (None
        entries skipped); the first call checks that this platform can compile at all."""
        if not self.cfg.compile:
            return
        if self._compile_problem is None:
            self._compile_problem = compile_problem(self.device) or ""
            if self._compile_problem:
                self._say(
                    f"engine.compile: torch.compile cannot run here ({self._compile_problem}); "
                    "running eager"
                )
        if self._compile_problem:
            return
        for model in models:
            if model is not None:
                self._compiled_blocks += compile_blocks(model, self._say)

    def _say(self, line: str) -> None:
        """One unwrapped line on the main process's console."""
        self.console.print(line, soft_wrap=True, markup=False, highlight=False)

    # -- output --------------------------------------------------------------------------------
    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._compiled_blocks:  # compile time apart from step time (engine.compile, 5.)
            metrics = {
                **metrics,
                "perf/compile_s": compile_seconds(),
                "perf/compiled_graphs": compiled_graphs(),
            }
        self.metrics.log(metrics, step)

    def print(self, *args: Any) -> None:
        self.console.print(*args)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """Iterate with progress shown on the main process: a live bar on a terminal, a line
        every ~10 % (and at the end) otherwise, so CI logs and files show progress too."""
        total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        if not self.is_main:
            yield from items
            return
        if self.console.is_terminal:
            from rich.progress import track

            yield from track(items, total=total, description=desc, console=self.console)
            return
        every = max(1, math.ceil((total or 10) / 10))
        t0 = time.perf_counter()
        n = 0
        for n, item in enumerate(items, 1):
            yield item
            if n % every == 0 or n == total:
                of = f"/{total}" if total else ""
                self.console.print(f"{desc} {n}{of} ({time.perf_counter() - t0:.1f}s)")

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, step: int, trainer_state: dict[str, Any]) -> Path:
        return save_checkpoint(
            self.accelerator, self.run.checkpoints, step, trainer_state, self.cfg.keep_checkpoints
        )

    def should_save(self, step: int) -> bool:
        return self.cfg.checkpoint_every > 0 and step % self.cfg.checkpoint_every == 0

    def resume(self) -> dict[str, Any] | None:
        """Load the latest checkpoint into the prepared objects, if resuming is on and one exists."""
        if not self.cfg.resume:
            return None
        path = latest_checkpoint(self.run.checkpoints)
        if path is None:
            return None
        self.print(f"resuming from {path}")
        return load_checkpoint(self.accelerator, path)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The run's precision context for forward passes (see `autocast`)."""
        return autocast(self.accelerator)

    def close(self) -> None:
        self.metrics.close()
        if self.cfg.log_with:
            self.accelerator.end_training()


@contextlib.contextmanager
def autocast(acc: Any) -> Iterator[None]:
    """The configured autocast; under bf16 on a CPU also the "math" attention kernel, whose
    forward + backward is ~2.4x faster there than the CPU flash kernel in bf16 (16×4 heads × 62
    tokens, torch 2.13; in fp32 the flash kernel is the faster one and stays)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(acc.autocast())
        if acc.mixed_precision == "bf16" and acc.device.type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
