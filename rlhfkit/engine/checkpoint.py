"""Checkpoints that survive a kill at any moment.

A checkpoint is a directory `checkpoints/step_00000100/` holding Accelerate's `save_state`
output (every prepared model, optimiser and scheduler, and each process's RNG states, sharded
correctly under FSDP / DeepSpeed) plus `trainer_state.pt` (the trainer's own state: step, data
position, KL controller, running statistics, extra generators) written by the main process,
and `rng_<rank>.pt` per process (its Python / NumPy / torch RNG states: under
`accelerate launch` every process resumes its own streams, e.g. its dropout). It is written under a temporary
name and renamed into place only when complete; the `latest` file, itself replaced atomically,
names the newest complete checkpoint. A kill leaves either the old or the new checkpoint, never a
half-written one that resume would pick up.

Frozen parameters (the base model under LoRA, a frozen reward model) are not written: they never
change, and resuming rebuilds them from where the run loaded them, so a LoRA checkpoint holds the
adapters, the trained heads and the optimiser state (SmolLM2-135M with LoRA r = 16 on every
linear layer: 57 MB, where the whole model made it 0.57 GB). The names left out are listed in
`trainer_state.pt`; resuming checks that each is still frozen. (FSDP and DeepSpeed write their
own sharded state and are left as they are.)

A checkpoint that cannot be written because its disk is full (or not writable) is a
`CheckpointWriteError`, a user error: one line naming the folder and the free space, the partial
folder removed, the previous checkpoint and `latest` left as they were.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.errors import UserError

LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
FROZEN_KEY = "frozen_not_saved"
LOW_DISK_BYTES = 64 * 2**20
"""Below this much free space a failed write is taken for a full disk, not a bug: torch reports a
full disk as a RuntimeError ("unexpected pos …"), not as an OSError."""


class CheckpointError(UserError):
    """A checkpoint that cannot be written (disk full, quota, a read-only folder) or that does
    not fit the run resuming from it."""

    kind = "checkpoint error"


class CheckpointWriteError(CheckpointError):
    """The write failed for want of disk (see `LOW_DISK_BYTES`)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when present) RNG states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _not_tied_weights_notice(record: logging.LogRecord) -> bool:
    """Drops Accelerate's "Removed shared tensor {'lm_head.weight'} while saving" notice: a tied
    LM head shares the embedding's storage, safetensors stores it once, and loading the state
    ties it again (the resume tests check the reloaded model equals the saved one)."""
    return "Removed shared tensor" not in record.getMessage()


def save_checkpoint(
    accelerator: Any, root: str | Path, step: int, trainer_state: dict[str, Any], keep_last: int = 2
) -> Path:
    """Save everything needed to resume at `step`; every process must call this."""
    root = Path(root)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # debris from a run killed mid-save
    accelerator.wait_for_everyone()
    accelerate_log = logging.getLogger("accelerate.utils.other")
    accelerate_log.addFilter(_not_tied_weights_notice)
    left_out: list[list[str]] = []
    hook = (
        accelerator.register_save_state_pre_hook(_leave_out_frozen(left_out))
        if _plain(accelerator)
        else None
    )
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save(capture_rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = dict(trainer_state, step=step)
            if any(left_out):
                state[FROZEN_KEY] = left_out
            torch.save(state, tmp / TRAINER_STATE)
    except (OSError, RuntimeError) as e:
        raise _write_error(e, root, tmp, final) from e
    finally:
        accelerate_log.removeFilter(_not_tied_weights_notice)
        if hook is not None:
            hook.remove()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(root / LATEST, final.name + "\n")
        if keep_last > 0:
            done = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in done[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _plain(accelerator: Any) -> bool:
    """Whether Accelerate saves whole state dicts (not FSDP / DeepSpeed / Megatron shards)."""
    from accelerate.utils import DistributedType

    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    return accelerator.distributed_type not in sharded


def _frozen_names(model: torch.nn.Module) -> list[str]:
    """State-dict names of the parameters that do not train (tied aliases included)."""
    return [n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad]


def _leave_out_frozen(left_out: list[list[str]]) -> Callable[..., None]:
    """A save_state pre-hook that drops each model's frozen parameters from the state dict it is
    about to write, recording the names per model in `left_out`."""

    def hook(models: list[torch.nn.Module], weights: list[dict], output_dir: str) -> None:
        for model, weights_of_model in zip(models, weights, strict=True):
            names = [n for n in _frozen_names(model) if n in weights_of_model]
            for name in names:
                del weights_of_model[name]
            left_out.append(names)

    return hook


def _check_still_frozen(path: Path, left_out: list[list[str]]) -> Callable[..., None]:
    """A load_state pre-hook: every name the checkpoint left out must be frozen in this run."""

    def hook(models: list[torch.nn.Module], input_dir: str) -> None:
        for i, (model, names) in enumerate(zip(models, left_out, strict=True)):
            training = sorted(set(names) - set(_frozen_names(model)))
            if training:
                raise CheckpointError(
                    f"{path}: the checkpoint left out {training[0]} of model {i} as frozen, "
                    "but this run trains it (a changed LoRA / freezing setting?); resume in a "
                    "new run directory or with the original settings"
                )

    return hook


def _write_error(e: BaseException, root: Path, tmp: Path, final: Path) -> BaseException:
    """`e` as a `CheckpointWriteError` when the disk is the cause (an OSError, or any failure with
    less than LOW_DISK_BYTES free); the partial folder is removed either way. Anything else is
    returned unchanged: a bug keeps its traceback."""
    free = shutil.disk_usage(root).free
    shutil.rmtree(tmp, ignore_errors=True)
    if not isinstance(e, OSError) and free >= LOW_DISK_BYTES:
        return e
    previous = latest_checkpoint(root)
    kept = f"the last complete checkpoint, {previous.name}, is intact" if previous else "none kept"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointWriteError(
        f"could not write checkpoint {final} ({free / 2**20:.0f} MiB free on its disk: {reason}); "
        f"{kept}. Free space, or lower engine.keep_checkpoints / raise engine.checkpoint_every"
    )


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text(encoding="utf-8").strip()
    return path if (path / TRAINER_STATE).is_file() else None


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore models/optimisers/schedulers/RNG into the prepared objects; return trainer state."""
    path = Path(path)
    state = torch.load(path / TRAINER_STATE, weights_only=False)
    left_out = state.pop(FROZEN_KEY, None)
    if left_out is None:
        accelerator.load_state(str(path))
    else:  # the frozen weights are the ones this run loaded: only check that they are frozen
        hook = accelerator.register_load_state_pre_hook(_check_still_frozen(path, left_out))
        try:
            accelerator.load_state(str(path), strict=False)
        finally:
            hook.remove()
    mine = path / f"rng_{accelerator.process_index}.pt"
    # checkpoints written before per-process RNG files kept process 0's states in the state
    saved = torch.load(mine, weights_only=False) if mine.is_file() else state.pop("rng")
    restore_rng_state(saved)
    return state
