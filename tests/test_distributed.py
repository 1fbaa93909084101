"""Every trainer under `accelerate launch --multi_gpu --num_processes 2` on CPU (DDP over gloo) equals one
process at the same global batch, and a 2-process run killed mid-run and resumed equals the
uninterrupted one.

Each 2-process run goes through the real user path: a YAML config and
`accelerate launch ... -m rlhfkit.cli <command> -c config.yaml`, one thread per process. The
1-process reference runs in this process with twice the gradient-accumulation steps, so both see
the same micro-batches (`data.plan_steps`, `update.minibatch_epochs` split the same rows).

Tolerance. Two processes compute the same micro-batches as one process; what may differ is
(a) the order of floating-point reductions (the DDP all-reduce sums two gradients where one
process accumulates them; for W = 2 both add the same two addends, and the ×2 / 2 of DDP's
averaging is exact), and (b) in the online trainers, the prompts a process samples share their
padded batch with other prompts than in one process (different widths of the same masked
matmuls), so the rollout's log-probs differ by a rounding (~1e-7 relative). Sampled tokens do not
depend on that (rows are seeded by their global number, `rollout.row_seeds`).
- SFT, RM, DPO, KTO: (a) only (KTO's z₀ adds the processes' sums: two addends either way). Measured: bit-identical weights. Asserted: rtol 1e-6, atol 1e-7.
- PPO, GRPO: (b) enters every ratio; the policy gradient Σ A·ratio·∇log π is a sum of terms
  whose advantages cancel (zero mean per group / after whitening), which magnifies a 1e-7
  relative rounding in the terms into ~1e-5 relative in the sum. Measured after 12 Adam steps of
  lr 1e-4 (weights moved ~1e-3): max |Δ| 7e-6 (GRPO), 2e-6 (PPO). Asserted: atol 2e-5, rtol
  1e-5, i.e. 2 % of the distance trained; an error in the distributed arithmetic (a process
  updating with its own gradient, a mini-batch split differently) moves weights by O(1e-4–1e-3).
Metrics agree to rel 1e-5 (online trainers: 5e-5, the same magnified rounding) or abs 1e-6 (a KL or approx-KL near 0 is a difference of nearly equal
log-probs: its absolute error is ~1e-7 however small it is), timing ones excepted.

Clipping is a threshold: a ratio at 1 ± ε that one process computes a rounding above the edge
and the other below changes the clip fractions by a token and the gradient by that token's term.
The online runs therefore use a learning rate at which no ratio reaches the clip (the metrics
assert clipfrac 0 in both runs), so what is compared is the distributed arithmetic.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhfkit.engine.metrics import read_metrics

HERE = Path(__file__).parent
WORDS = [f"w{i}" for i in range(14)]
PARAM_TOL = {"rtol": 1e-6, "atol": 1e-7}  # SFT, RM, DPO, KTO (see the module docstring)
ONLINE_PARAM_TOL = {"rtol": 1e-5, "atol": 2e-5}  # PPO, GRPO
METRIC_TOL = {"rel": 1e-5, "abs": 1e-6}
# the online trainers' metrics carry the magnified rounding of (b) (module docstring): GRPO's
# policy/grad_norm after one update measured 1.3e-5 relative apart (transformers 5.25)
ONLINE_METRIC_TOL = {"rel": 5e-5, "abs": 1e-6}
TIMING = ("time", "perf/", "time/")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = tmp_path_factory.mktemp("dist_assets")
    vocab = {"<eos>": 0, "<pad>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64,
        eos_token_id=0, pad_token_id=1, bos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    GPT2LMHeadModel(cfg).save_pretrained(root / "policy")
    hf_tok.save_pretrained(root / "policy")
    rng = torch.Generator().manual_seed(0)

    def words(lo: int, hi: int) -> str:
        n = int(torch.randint(lo, hi, (1,), generator=rng))
        return " ".join(WORDS[i] for i in torch.randint(2, len(WORDS), (n,), generator=rng))

    prompts, demos, pairs, rated = [], [], [], []
    for _ in range(48):
        p = words(2, 6)
        prompts.append({"prompt": p})
        demos.append({"prompt": p, "response": words(1, 5)})
        pairs.append({"prompt": p, "chosen": "w7 " + words(0, 3), "rejected": words(1, 4)})
        rated.append({"prompt": p, "completion": pairs[-1]["chosen"], "label": True})
        rated.append({"prompt": p, "completion": pairs[-1]["rejected"], "label": False})
    for name, rows in (("prompts", prompts), ("sft", demos), ("pairs", pairs), ("rated", rated)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": str(root), "policy": str(root / "policy")}


def config(command: str, a: dict[str, str], out: Path, world: int) -> dict:
    """The run of `command` with a global batch independent of `world` (1 or 2 processes)."""
    root = Path(a["root"])
    engine = {"seed": 3, "device": "cpu", "threads": 1, "checkpoint_every": 1}
    offline = {
        "out_dir": str(out),
        "model": {"name_or_path": a["policy"]},
        "optim": {"lr": 3e-3, "max_grad_norm": 1.0},
        "log_every": 1,
        "max_steps": 3,
        "grad_accum_steps": 2 // world,
        "engine": engine,
    }
    data = {"max_length": 24, "max_tokens": 64, "prompt_template": "raw"}
    if command == "sft":
        return offline | {"data": data | {"train": str(root / "sft.jsonl")}}
    if command == "rm":
        return offline | {
            "data": data | {"train": str(root / "pairs.jsonl"), "validation_fraction": 0.25},
            "eval_every": 2,
        }
    if command == "dpo":
        return offline | {"data": data | {"train": str(root / "pairs.jsonl"), "max_pairs": 4}}
    if command == "kto":  # z₀ from the whole step: both processes' mismatched pairs
        return offline | {
            "data": data | {"train": str(root / "rated.jsonl"), "max_examples": 4,
                            "validation_fraction": 0.25},
        }  # fmt: skip
    online = {
        "out_dir": str(out),
        "policy": {"name_or_path": a["policy"]},
        "data": {"train": str(root / "prompts.jsonl"), "prompt_template": "raw"},
        "reward_fn": "dist_helpers:target_fraction",
        "rollout": {"max_new_tokens": 6, "temperature": 1.0},
        "iterations": 3,
        "ppo_epochs": 2,
        "grad_accum_steps": 2 // world,
        "sample_every": 0,
        "optim": {"lr": 1e-4},  # no ratio reaches the clip: see the module docstring
        "kl_coef": 0.05,
        "engine": engine,
    }
    if command == "ppo":
        return online | {
            "rollout_batch_size": 8,
            "mini_batch_size": 4,
            "critic_optim": {"lr": 3e-3},
        }
    return online | {"rollout_batch_size": 4, "group_size": 4, "mini_batch_size": 8}


def one_process(command: str, cfg: dict) -> None:
    from rlhfkit.cli import COMMAND_DEFAULTS, TRAINERS

    module, cls_name, _ = TRAINERS[command]
    mod = __import__(module, fromlist=[cls_name])
    mod.train(getattr(mod, cls_name).model_validate(COMMAND_DEFAULTS.get(command, {}) | cfg))


def launch(command: str, cfg: dict, extra_env: dict | None = None, flags: tuple = ()) -> int:
    """`accelerate launch --multi_gpu --num_processes 2 -m rlhfkit.cli <command> -c cfg.yaml`
    (on a CPU-only host `--multi_gpu` picks the torchrun launcher, gloo; `--cpu` alone would
    start one process: Accelerate launches several CPU processes only through mpirun)."""
    path = Path(cfg["out_dir"] + ".yaml")
    path.write_text(yaml.safe_dump(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", RLHFKIT_DEBUG="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra_env or {})
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port), *flags,
        "-m", "rlhfkit.cli", command, "-c", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = Path(cfg["out_dir"] + ".log")
    log.write_text(proc.stdout + proc.stderr)
    return proc.returncode


def saved_models(run: Path, command: str) -> dict[str, torch.Tensor]:
    folders = {
        "sft": ["model"], "rm": ["model"], "dpo": ["model"], "kto": ["model"],
        "ppo": ["policy", "critic"],
    }  # fmt: skip
    out = {}
    for folder in folders.get(command, ["policy"]):
        for name, t in load_file(str(run / folder / "model.safetensors")).items():
            out[f"{folder}/{name}"] = t
    return out


def metric_rows(run: Path) -> dict[int, dict]:
    """The last line logged for each step, timing keys dropped (a resumed run logs a step that
    the kill interrupted a second time)."""
    rows: dict[int, dict] = {}
    for row in read_metrics(run / "metrics.jsonl"):
        kept = {k: v for k, v in row.items() if not k.startswith(TIMING)}
        rows.setdefault(row["step"], {}).update(kept)
    return rows


def assert_same_metrics(a: dict[int, dict], b: dict[int, dict], online: bool = False) -> None:
    tol = ONLINE_METRIC_TOL if online else METRIC_TOL
    assert a.keys() == b.keys()
    for step in a:
        assert a[step].keys() == b[step].keys(), step
        for key, value in a[step].items():
            if isinstance(value, float):
                assert b[step][key] == pytest.approx(value, **tol), (step, key)
            else:
                assert b[step][key] == value, (step, key)


def assert_same_models(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], **tol, msg=name)


COMMANDS = ["sft", "rm", "dpo", "kto", "ppo", "grpo"]


@pytest.fixture(scope="module")
def two_process_runs(assets, tmp_path_factory) -> dict[str, Path]:
    """One 2-process run per command, shared by the tests below."""
    root = tmp_path_factory.mktemp("dist_runs")
    runs = {}
    for command in COMMANDS:
        out = root / f"{command}_w2"
        code = launch(command, config(command, assets, out, 2))
        assert code == 0, Path(str(out) + ".log").read_text()[-3000:]
        runs[command] = out
    return runs


@pytest.mark.parametrize("command", COMMANDS)
def test_two_processes_equal_one_at_the_same_global_batch(
    command, assets, two_process_runs, tmp_path
):
    one = tmp_path / f"{command}_w1"
    one_process(command, config(command, assets, one, 1))
    two = two_process_runs[command]
    a, b = saved_models(one, command), saved_models(two, command)
    online = command in ("ppo", "grpo")
    assert_same_models(a, b, **(ONLINE_PARAM_TOL if online else PARAM_TOL))
    # the models did train (equality of two untrained copies would prove nothing)
    base = load_file(str(Path(assets["policy"]) / "model.safetensors"))
    prefix = "policy/" if online else "model/"
    moved = [n for n in base if not torch.equal(base[n], a.get(prefix + n, base[n]))]
    assert moved
    assert_same_metrics(metric_rows(one), metric_rows(two), online)
    if online:  # the premise of the tolerance: no ratio reached the clip
        assert all(r["policy/clipfrac"] == 0.0 for r in metric_rows(two).values())
    # only the main process wrote: one line per logged step, no duplicates
    lines = read_metrics(two / "metrics.jsonl")
    assert len(lines) == len({(r["step"], tuple(sorted(r))) for r in lines})


def test_killed_two_process_run_resumes_to_the_uninterrupted_one(
    assets, two_process_runs, tmp_path
):
    """PPO, 2 processes, a checkpoint every iteration: process 0 is SIGKILLed inside iteration
    3's rollout, the launcher stops the other, and the relaunched run resumes from iteration 2
    (every process restoring its own RNG states) and ends where the uninterrupted run ended."""
    out = tmp_path / "ppo_killed"
    cfg = config("ppo", assets, out, 2)
    code = launch("ppo", cfg, {"RLHFKIT_TEST_KILL_AT": "3"})
    assert code != 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert not (out / "policy").exists()
    assert launch("ppo", cfg) == 0
    assert "resuming from" in Path(str(out) + ".log").read_text()
    full = two_process_runs["ppo"]
    assert_same_models(saved_models(full, "ppo"), saved_models(out, "ppo"), rtol=0, atol=0)
    assert_same_metrics(metric_rows(full), metric_rows(out), online=True)
    for rank in (0, 1):
        assert (out / "checkpoints" / "step_00000003" / f"rng_{rank}.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["rloo", "reinforce"])
def test_the_other_critic_free_trainers_on_two_processes_equal_one(command, assets, tmp_path):
    one, two = tmp_path / f"{command}_w1", tmp_path / f"{command}_w2"
    one_process(command, config(command, assets, one, 1))
    assert launch(command, config(command, assets, two, 2)) == 0, Path(f"{two}.log").read_text()
    assert_same_models(saved_models(one, command), saved_models(two, command), **ONLINE_PARAM_TOL)
    assert_same_metrics(metric_rows(one), metric_rows(two), online=True)


@pytest.mark.slow
def test_killed_two_process_grpo_run_resumes_to_the_uninterrupted_one(
    assets, two_process_runs, tmp_path
):
    out = tmp_path / "grpo_killed"
    cfg = config("grpo", assets, out, 2)
    assert launch("grpo", cfg, {"RLHFKIT_TEST_KILL_AT": "2"}) != 0
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    assert launch("grpo", cfg) == 0
    full = two_process_runs["grpo"]
    assert_same_models(saved_models(full, "grpo"), saved_models(out, "grpo"), rtol=0, atol=0)
    assert_same_metrics(metric_rows(full), metric_rows(out), online=True)


def test_a_reward_failing_on_one_process_stops_every_process_with_one_line(assets, tmp_path):
    """Process 1's reward function raises in iteration 2; process 0's does not. Neither waits
    on the other: the failure travels as NaN rows in the gathered batch, its message is gathered,
    and both stop (exit 2, the last checkpoint kept) or, with on_reward_error: skip, both skip."""
    out = tmp_path / "grpo_fail"
    cfg = config("grpo", assets, out, 2) | {"reward_fn": "dist_helpers:fails_on_rank_1"}
    assert launch("grpo", cfg, {"RLHFKIT_DEBUG": "0"}) != 0
    log = Path(f"{out}.log").read_text()
    line = (
        "reward error: iteration 2: reward function 'dist_helpers:fails_on_rank_1' raised "
        "ValueError: rank 1 cannot score; the run stopped"
    )
    assert log.count(line) == 2, log[-3000:]  # each process says it, in one line
    # no traceback from rlhfkit (the launcher reports its failed child with one of its own)
    assert "rlhfkit/" not in log.replace(str(tmp_path), "")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    skip = tmp_path / "grpo_skip"
    cfg = cfg | {"out_dir": str(skip), "on_reward_error": "skip"}
    assert launch("grpo", cfg) == 0, Path(f"{skip}.log").read_text()[-3000:]
    rows = read_metrics(skip / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("reward/failed_batches") == 1] == [2]


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "zero2", "zero3"])
def test_shipped_accelerate_configs_load_and_the_cli_finds_them(name):
    from accelerate.commands.config.config_args import load_config_from_file

    out = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "config", "accelerate", name],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    path = Path(out.stdout.strip())
    cfg = load_config_from_file(str(path))
    kind = {"ddp": "MULTI_GPU", "fsdp2": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
    assert cfg.distributed_type.value == kind[name]
    if name == "fsdp2":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
        assert cfg.deepspeed_config["zero3_init_flag"] is False  # see zero3.yaml


def test_a_batch_that_processes_cannot_share_equally_is_a_config_error(monkeypatch):
    from rlhfkit.config import ConfigError
    from rlhfkit.update import check_shardable

    monkeypatch.setenv("WORLD_SIZE", "2")
    check_shardable(8, 4)
    for rows, mini_batch in ((7, 4), (8, 3)):
        with pytest.raises(ConfigError, match="multiples of the number of processes"):
            check_shardable(rows, mini_batch)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_shardable(7, 3)


def test_sliced_forward_and_sampling_work_on_an_fsdp2_sharded_model():
    """Accelerate 1.16 runs `--use_fsdp` as DDP on CPU (docs/scale.md), so this drives torch's
    FSDP2 (`fully_shard`, gloo, 2 processes) directly: the log-prob forward that slices before
    the LM head runs through the root's hooks (`engine.wrapped_forward`) and gives the unsharded
    model's gradients; sampling inside `engine.gathered` gives its tokens."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(HERE / "dist_fsdp2_worker.py")], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert out["param_type"] == "DTensor"  # really sharded
    assert out["grad_max_abs_diff"] < 1e-6  # grads are O(0.1–1): rounding only
    assert out["same_tokens"]
    assert out["sampling_logprob_max_abs_diff"] < 1e-6
    assert out["pushed_names_equal"] and out["pushed_max_abs_diff"] == 0.0  # gathered exactly
