"""Engine: run directory, metrics, atomic checkpoints, resume of model/optimiser/RNG state."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rlhfkit.config import ConfigBase
from rlhfkit.engine import (
    Engine,
    EngineConfig,
    OptimConfig,
    build_optimizer,
    eval_mode,
    latest_checkpoint,
)
from rlhfkit.engine.checkpoint import atomic_write_text
from rlhfkit.engine.metrics import TokenRate, read_metrics


class _Cfg(ConfigBase):
    out_dir: str
    engine: EngineConfig = EngineConfig(device="cpu")
    optim: OptimConfig = OptimConfig(lr=0.1)


def _setup(out_dir, **engine_kw):
    cfg = _Cfg(out_dir=str(out_dir), engine=EngineConfig(device="cpu", **engine_kw))
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), cfg.optim)
    model, opt = engine.accelerator.prepare(model, opt)
    return cfg, engine, model, opt


def _step(model, opt):
    x = torch.randn(8, 3)  # draws from the global RNG, so RNG restore matters
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def test_run_dir_layout_and_resolved_config(tmp_path):
    cfg, engine, *_ = _setup(tmp_path / "run", seed=7)
    engine.log({"loss/x": torch.tensor(1.5), "bad": float("nan")}, step=1)
    engine.close()
    run = tmp_path / "run"
    assert (run / "checkpoints").is_dir() and (run / "samples").is_dir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["engine"]["seed"] == 7 and saved["out_dir"] == str(run)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["config_class"] == "_Cfg" and meta["code_version"]
    rows = read_metrics(run / "metrics.jsonl")
    assert rows[0]["step"] == 1 and rows[0]["loss/x"] == 1.5 and rows[0]["bad"] == "nan"


def test_resume_equals_uninterrupted(tmp_path):
    # Uninterrupted: 6 steps.
    _, engine, model, opt = _setup(tmp_path / "a")
    losses_a = [_step(model, opt) for _ in range(6)]
    final_a = model.weight.detach().clone()
    engine.close()

    # Interrupted after 3 (checkpoint), then a fresh process-like setup resumes for 3 more.
    _, engine, model, opt = _setup(tmp_path / "b")
    losses_b = [_step(model, opt) for _ in range(3)]
    engine.save(3, {"data_position": 3})
    _step(model, opt)  # work after the checkpoint is lost in the "kill"
    engine.close()

    _, engine, model, opt = _setup(tmp_path / "b")
    state = engine.resume()
    assert state["step"] == 3 and state["data_position"] == 3
    losses_b += [_step(model, opt) for _ in range(3)]
    assert losses_b == losses_a
    assert torch.equal(model.weight.detach(), final_a)


def test_checkpoint_is_atomic_and_pruned(tmp_path):
    _, engine, model, opt = _setup(tmp_path / "r", keep_checkpoints=2)
    for step in (1, 2, 3):
        _step(model, opt)
        engine.save(step, {})
    ckpts = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert ckpts == ["latest", "step_00000002", "step_00000003"]
    # A half-written checkpoint (killed mid-save) is never picked up.
    (tmp_path / "r" / "checkpoints" / ".tmp-step_00000004").mkdir()
    assert latest_checkpoint(tmp_path / "r" / "checkpoints").name == "step_00000003"


def test_resume_off_starts_fresh(tmp_path):
    _, engine, model, opt = _setup(tmp_path / "r")
    engine.save(1, {})
    _, engine, model, opt = _setup(tmp_path / "r", resume=False)
    assert engine.resume() is None


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary debris


def test_tensorboard_when_asked(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is the optional [tensorboard] extra")
    _, engine, *_ = _setup(tmp_path / "run", log_with=["tensorboard"])
    engine.log({"loss/x": 2.0}, step=3)
    engine.close()
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/x")] == [(3, 2.0)]
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["loss/x"] == 2.0


class _Tied(torch.nn.Module):
    """An embedding and an output layer sharing one weight, like a tied LM head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_tied_weights_checkpoint_is_quiet_and_reloads_tied(tmp_path, caplog):
    """Accelerate's "Removed shared tensor" notice is dropped; the tie survives the reload."""
    cfg = _Cfg(out_dir=str(tmp_path / "t"), engine=EngineConfig(device="cpu"))
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    torch.manual_seed(0)
    model = engine.accelerator.prepare(_Tied())
    with caplog.at_level("WARNING"):
        engine.save(1, {})
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]
    saved = model.embed.weight.detach().clone()
    with torch.no_grad():
        model.embed.weight.zero_()
    engine.resume()
    assert torch.equal(model.embed.weight, saved) and model.head.weight is model.embed.weight
    engine.close()


_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from rlhfkit.engine import keep_freed_memory
    assert keep_freed_memory()
def step():  # activation-sized tensors (8 MiB), written, held, then all freed, as in a step
    held = [torch.ones(2048, 1024) for _ in range(6)]
    sum(x.sum() for x in held)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow  # page-fault counts depend on the machine's allocator and memory pressure
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not platform.libc_ver()[0] == "glibc",
    reason="glibc malloc only",
)
def test_keep_freed_memory_stops_per_step_page_faults():
    """Without it, the freed tensors go back to the OS at the end of every step and the next
    step faults their pages in again (measured ≈ 147,000 faults in 20 steps, up to 2,048 per
    8 MiB tensor). With it, the freed memory is reused (measured ≈ 2,000 in all)."""

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.strip())

    assert faults("default") > 60_000
    assert faults("keep") < 6_000


def test_checkpoint_rng_is_per_process_and_old_checkpoints_still_load(tmp_path):
    """Each process writes rng_<rank>.pt; a checkpoint from before that (process 0's RNG states
    inside trainer_state.pt) still resumes."""
    from accelerate import Accelerator

    from rlhfkit.engine.checkpoint import TRAINER_STATE, load_checkpoint, save_checkpoint

    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(2, 2))
    torch.manual_seed(7)
    path = save_checkpoint(acc, tmp_path, 1, {"step": 1})
    assert (path / "rng_0.pt").is_file()
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert load_checkpoint(acc, path)["step"] == 1
    assert torch.equal(torch.rand(3), expected)
    # the old layout: no rng_0.pt, the states under "rng" in the trainer state
    old = torch.load(path / TRAINER_STATE, weights_only=False)
    old["rng"] = torch.load(path / "rng_0.pt", weights_only=False)
    torch.save(old, path / TRAINER_STATE)
    (path / "rng_0.pt").unlink()
    torch.manual_seed(0)
    assert load_checkpoint(acc, path) == {"step": 1}
    assert torch.equal(torch.rand(3), expected)
    del model


def test_token_rate_excludes_paused_time(monkeypatch):
    """Tokens/s counts the training steps only: time inside `paused()` (evaluation,
    checkpoints) is not in the denominator, and each `take` starts a new window."""
    clock = iter([0.0, 2.0, 7.0, 10.0, 13.0])  # start, pause in, pause out, take, take
    monkeypatch.setattr("rlhfkit.engine.metrics.time.perf_counter", lambda: next(clock))
    rate = TokenRate()
    rate.add(300)
    with rate.paused():  # 2 s -> 7 s: evaluation
        pass
    rate.add(200)
    # 10 s of wall time, 5 of them paused: 500 tokens in 5 s, twice that with 2 processes
    assert rate.take(world=2) == {"perf/tokens": 1000, "perf/tokens_per_s": 200.0}
    rate.add(30)
    assert rate.take() == {"perf/tokens": 30, "perf/tokens_per_s": 10.0}  # 10 s -> 13 s


def _full_disk(monkeypatch, error: BaseException, free: int) -> None:
    """save_state writes part of its folder, then fails with `error`; the disk reports `free`."""
    import shutil as _shutil
    from collections import namedtuple

    def save_state(self, output_dir, **kw):
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        raise error

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("accelerate.Accelerator.save_state", save_state)
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: usage(1 << 40, (1 << 40) - free, free))


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), RuntimeError("unexpected pos 559360064 vs 559359956")],
)
def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(tmp_path, monkeypatch, error):
    from rlhfkit.engine.checkpoint import CheckpointWriteError
    from rlhfkit.errors import UserError

    _, engine, model, opt = _setup(tmp_path / "r")
    _step(model, opt)
    engine.save(1, {"data_position": 1})
    ckpts = tmp_path / "r" / "checkpoints"
    before = {p.name: p.read_bytes() for p in (ckpts / "step_00000001").iterdir()}
    _full_disk(monkeypatch, error, free=1 << 20)
    with pytest.raises(CheckpointWriteError) as e:
        engine.save(2, {"data_position": 2})
    assert isinstance(e.value, UserError)
    message = str(e.value)
    assert "\n" not in message and "step_00000002" in message and "1 MiB free" in message
    assert "step_00000001, is intact" in message
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_00000001"]  # no debris
    assert latest_checkpoint(ckpts).name == "step_00000001"
    assert {p.name: p.read_bytes() for p in (ckpts / "step_00000001").iterdir()} == before


def test_a_failed_save_with_disk_to_spare_stays_a_bug(tmp_path, monkeypatch):
    _, engine, model, opt = _setup(tmp_path / "r")
    _full_disk(monkeypatch, RuntimeError("a bug in saving"), free=10 << 30)
    with pytest.raises(RuntimeError, match="a bug in saving"):
        engine.save(1, {})
    assert not (tmp_path / "r" / "checkpoints" / ".tmp-step_00000001").exists()


def test_frozen_parameters_are_not_written_and_must_stay_frozen_to_resume(tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from rlhfkit.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    def model(frozen: bool, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
        m[0].requires_grad_(not frozen)
        return m

    acc = Accelerator(cpu=True)
    saved = acc.prepare(model(frozen=True, seed=0))
    path = save_checkpoint(acc, tmp_path, 1, {})
    assert sorted(load_file(str(path / "model.safetensors"))) == ["1.bias", "1.weight"]
    acc = Accelerator(cpu=True)
    resumed = acc.prepare(model(frozen=True, seed=1))  # the trained layer comes from the file
    load_checkpoint(acc, path)
    assert torch.equal(resumed[1].weight, saved[1].weight)
    assert not torch.equal(resumed[0].weight, saved[0].weight)  # frozen: as this run built it
    acc = Accelerator(cpu=True)
    acc.prepare(model(frozen=False, seed=0))
    with pytest.raises(CheckpointError, match=r"left out 0\.bias of model 0 as frozen"):
        load_checkpoint(acc, path)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_each_models_mode_also_after_an_exception(training):
    """`eval_mode`: every given model (None skipped) in eval mode inside the block, submodules
    included (dropout off), and each model's own mode back afterwards, also when the block
    raises; a second model keeps its own mode, not the first one's."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train(training)
    other = torch.nn.Dropout(0.5).train(not training)
    with eval_mode(model, None, other):
        assert not model.training and not model[1].training and not other.training
    assert model.training is training and model[1].training is training
    assert other.training is (not training)
    with pytest.raises(RuntimeError, match="mid-evaluation"), eval_mode(model, other):
        assert not model.training
        raise RuntimeError("mid-evaluation")
    assert model.training is training and model[1].training is training
    assert other.training is (not training)
