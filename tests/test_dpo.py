"""DPO trainer: every loss (DPO, cDPO, IPO, SimPO, ORPO) against hand-computed values or its
definition, log-probs against a naive per-row forward (shared-prompt rows ≡ plain rows), one
trainer step against a hand-written step, accumulation ≡ one batch, learning on the simulated world, resume ≡ uninterrupted, the LoRA
reference = the base model, presets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from helpers import build_config
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from rlhfkit.algos.dpo import LOSSES, DPOConfig, train
from rlhfkit.algos.dpo.trainer import REFERENCE_FILE, micro_batch_loss
from rlhfkit.config import load_config
from rlhfkit.core import dpo_sigmoid_losses, ipo_losses, orpo_losses, simpo_losses
from rlhfkit.data import encode_pairs, read_preferences
from rlhfkit.engine import Engine, accumulate
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.models import ModelConfig, load_policy
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.rollout import reference_context
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.update.pairs import collate, pair_logps

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def _pairs() -> list[dict]:
    rows = []
    for i, w in enumerate(WORDS * 4):
        rows.append(
            {
                "prompt": f"is it a {w}?",
                "chosen": f"it is a {w}, yes." if i % 2 else "yes.",
                "rejected": "no." if i % 3 else f"it is a {w}, no, no.",
            }
        )
    return rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    rows = _pairs()
    texts = [r["prompt"] + " " + r["chosen"] + " " + r["rejected"] for r in rows]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.1
    base = save_tiny_model(model, root / "base", tok)
    other = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1)
    save_tiny_model(other, root / "other", tok)  # a reference that differs from the policy
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ranked = [
        {"prompt": f"is it a {w}?", "responses": [f"yes, a {w}.", "maybe.", "no."]} for w in WORDS
    ]
    (root / "ranked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ranked))
    return root, base, tok


def _cfg(root: Path, base: Path, out: str, **kw) -> DPOConfig:
    defaults = {
        "out_dir": str(root / out),
        "model": {"name_or_path": str(base)},
        "data": {"train": str(root / "pairs.jsonl"), "max_length": 32, "max_tokens": 256},
        "optim": {"lr": 1e-3, "max_grad_norm": 1.0},
        "log_every": 1,
        "engine": {"seed": 0, "device": "cpu", "threads": 1},
    }
    return build_config(DPOConfig, defaults, **kw)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


PC, PR, RC, RR = [-5.0, -2.0, -7.5], [-6.0, -1.0, -7.0], [-5.5, -2.0, -8.0], [-5.0, -1.5, -6.0]


def _t(x: list[float]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def test_dpo_and_cdpo_losses_by_hand():
    # h = (pc - rc) - (pr - rr): 0.5 - (-1.0) = 1.5; 0 - 0.5 = -0.5; 0.5 - (-1.0) = 1.5
    h = [1.5, -0.5, 1.5]
    beta = 0.5
    out = dpo_sigmoid_losses(_t(PC), _t(PR), _t(RC), _t(RR), beta)
    assert out.losses.tolist() == pytest.approx([-logsig(0.75), -logsig(-0.25), -logsig(0.75)])
    assert out.losses[0].item() == pytest.approx(0.3868710, abs=1e-7)  # log(1 + e^-0.75)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, 0.0, 0.25])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.25, -0.5])
    s = 0.2
    cdpo = dpo_sigmoid_losses(_t(PC), _t(PR), _t(RC), _t(RR), beta, label_smoothing=s)
    want = [-(1 - s) * logsig(beta * x) - s * logsig(-beta * x) for x in h]
    assert cdpo.losses.tolist() == pytest.approx(want, rel=1e-12)
    assert cdpo.losses[1].item() == pytest.approx(0.8 * 0.8259394 + 0.2 * 0.5759394, abs=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_sigmoid_losses(_t(PC), _t(PR), _t(RC), _t(RR), beta, label_smoothing=0.5)


def test_ipo_and_simpo_losses_by_hand():
    beta = 0.5  # IPO target margin 1/(2β) = 1
    ipo = ipo_losses(_t(PC), _t(PR), _t(RC), _t(RR), beta)
    assert ipo.losses.tolist() == pytest.approx([0.25, 2.25, 0.25], rel=1e-12)
    beta, gamma = 2.0, 0.5
    simpo = simpo_losses(_t([-1.0, -0.5]), _t([-1.5, -0.25]), beta, gamma)
    # β(ā_w − ā_l) − γ = 2·0.5 − 0.5 = 0.5 and 2·(−0.25) − 0.5 = −1.0
    assert simpo.losses.tolist() == pytest.approx([-logsig(0.5), -logsig(-1.0)], rel=1e-12)
    assert simpo.losses[0].item() == pytest.approx(0.4740770, abs=1e-7)
    assert simpo.chosen_rewards.tolist() == [-2.0, -1.0]
    z = torch.zeros(4, dtype=torch.float64)
    assert simpo_losses(z, z, 2.0, 0.0).losses.tolist() == pytest.approx([math.log(2)] * 4)


def test_orpo_loss_equals_its_definition():
    """ORPO (Hong et al. 2024 eqs. 2–7), one pair at a time from the definition: P = e^ā,
    odds = P / (1 − P), ℓ = −ā_w − λ·log σ(log(odds_w / odds_l)); also for ā near 0 (P → 1),
    where log(1 − P) needs expm1."""
    lam = 0.25
    aw = [-1.2, -0.3, -2.5, -1e-4]
    al = [-0.9, -1.7, -2.5, -3.0]
    want = []
    for w, lo in zip(aw, al, strict=True):
        odds_w = math.exp(w) / (1 - math.exp(w))
        odds_l = math.exp(lo) / (1 - math.exp(lo))
        log_or = math.log(odds_w / odds_l)
        want.append(-w - lam * math.log(1 / (1 + math.exp(-log_or))))
    out = orpo_losses(_t(aw), _t(al), lam)
    assert out.losses.tolist() == pytest.approx(want, rel=1e-9)
    assert out.chosen_rewards.tolist() == pytest.approx([lam * w for w in aw])
    assert out.nll.tolist() == pytest.approx([-w for w in aw])
    assert out.losses[2].item() == pytest.approx(2.5 + lam * math.log(2), rel=1e-12)  # ā_w = ā_l
    f = torch.tensor([-1e-6], requires_grad=True)  # float32, P within 1e-6 of 1: still finite
    loss = orpo_losses(f, torch.tensor([-2.0]), lam).losses.sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()


def _naive_logps(model, items) -> torch.Tensor:
    """Σ log p of each reply's tokens, each sequence alone through the HF model, float64."""
    out = torch.zeros(2, len(items), dtype=torch.float64)
    for i, it in enumerate(items):
        for side, seq in enumerate((it.chosen_ids, it.rejected_ids)):
            logits = model(input_ids=torch.tensor([seq])).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            out[side, i] = sum(logp[t - 1, seq[t]] for t in range(it.prompt_length, len(seq)))
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_and_plain_rows_equal_a_naive_forward(assets, attn):
    root, base, tok = assets
    items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records[:6], 32)
    model = load_policy(ModelConfig(name_or_path=str(base), attn_implementation=attn)).eval()
    with torch.no_grad():
        naive = _naive_logps(model, items).float()
        for share in (True, False):
            got = pair_logps(model, collate(items, tok.pad_token_id, share))
            torch.testing.assert_close(got, naive, atol=2e-5, rtol=1e-5)
    counts = collate(items, tok.pad_token_id, True)["counts"]
    assert counts[0].tolist() == [len(it.chosen_ids) - it.prompt_length for it in items]


def test_accumulation_equals_one_batch(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "unused")
    items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records[:7], 32)
    ref_logps = torch.randn(2, 7, generator=torch.Generator().manual_seed(0)) - 10
    grads, sums = [], []
    for split in ([list(range(7))], [[0, 1], [2], [3, 4, 5, 6]]):
        model = load_policy(ModelConfig(name_or_path=str(base))).eval()
        thunks = []
        for b in split:
            batch = collate([items[i] for i in b], tok.pad_token_id, True)
            batch["index"] = torch.tensor(b)
            thunks.append(
                lambda batch=batch, model=model: micro_batch_loss(
                    model, batch, lambda x: ref_logps[:, x["index"]], 7, 1, LOSSES["sigmoid"], cfg
                )
            )
        sums.append(accumulate(Accelerator(cpu=True), model, thunks))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)
    for key in sums[0]:
        assert sums[1][key] == pytest.approx(sums[0][key], rel=1e-5, abs=1e-6)


def test_one_trainer_step_equals_a_hand_written_step(assets):
    """max_steps 1 over all pairs in one micro-batch, a reference that is not the policy: the
    saved weights equal a naive step (per-row forwards, the loss from its definition, AdamW)
    from the same start. Adam's eps = 1 makes the update scale with the gradient (with a tiny
    eps the first Adam step is ≈ lr·sign(g) and would hide a wrong loss scale)."""
    root, base, tok = assets
    lr, beta, s = 1e-2, 0.5, 0.1
    cfg = _cfg(
        root, base, "one_step", max_steps=1, beta=beta, label_smoothing=s,
        ref_model=str(root / "other"), optim={"lr": lr, "max_grad_norm": None, "eps": 1.0},
        data={"validation_fraction": 0.0, "max_tokens": 100_000},
    )  # fmt: skip
    result = train(cfg)
    items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records, 32)
    model = GPT2LMHeadModel.from_pretrained(base).eval()  # dropout off, as disable_dropout
    with torch.no_grad():
        ref = _naive_logps(GPT2LMHeadModel.from_pretrained(root / "other").eval(), items)
    pol = _naive_logps(model, items)
    h = (pol[0] - ref[0]) - (pol[1] - ref[1])
    loss = (-(1 - s) * torch.nn.functional.logsigmoid(beta * h)
            - s * torch.nn.functional.logsigmoid(-beta * h)).mean()  # fmt: skip
    assert abs(loss.item() - math.log(2)) > 0.05  # π ≠ π_ref: the loss is not at its midpoint
    loss.backward()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1.0, weight_decay=0)
    opt.step()
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(result.model_dir / "model.safetensors"))
    moved = 0
    for name, p in model.named_parameters():
        if name in after:
            torch.testing.assert_close(after[name], p.detach().float(), atol=1e-7, rtol=1e-5)
            moved += not torch.equal(after[name], before[name])
    assert moved > 10
    metrics = read_metrics(result.run_dir / "metrics.jsonl")[0]
    assert metrics["loss/dpo"] == pytest.approx(loss.item(), rel=1e-5)
    rewards_c, rewards_r = beta * (pol[0] - ref[0]), beta * (pol[1] - ref[1])
    assert metrics["rewards/margins"] == pytest.approx(
        float((rewards_c - rewards_r).mean()), rel=1e-4
    )
    assert metrics["rewards/accuracies"] == float((rewards_c > rewards_r).double().mean())
    assert metrics["logps/chosen"] == pytest.approx(float(pol[0].mean()), rel=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "simpo", "orpo"])
def test_every_variant_trains_and_reports_trl_metrics(assets, loss_type):
    root, base, tok = assets
    extra = {"beta": 2.0} if loss_type == "simpo" else {}
    cfg = _cfg(root, base, f"v_{loss_type}", epochs=6, loss_type=loss_type,
               data={"validation_fraction": 0.25}, **extra)  # fmt: skip
    result = train(cfg)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/dpo" in r]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"):  # fmt: skip
        assert key in rows[-1] and f"eval/{key}" in result.metrics
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    assert rows[-1]["rewards/accuracies"] > 0.8
    assert result.metrics["eval/rewards/accuracies"] > 0.7
    assert (result.run_dir / REFERENCE_FILE).is_file() == (loss_type not in ("simpo", "orpo"))


def test_ranked_lists_and_plain_rows_train(assets, capsys):
    root, base, tok = assets
    cfg = _cfg(root, base, "ranked", max_steps=2,
               data={"train": str(root / "ranked.jsonl"), "share_prompt": False,
                     "validation_fraction": 0.25})  # fmt: skip
    result = train(cfg)
    assert (result.model_dir / "model.safetensors").is_file()
    assert "eval/rewards/accuracies" in result.metrics
    out = capsys.readouterr().err  # the reference pass shows its progress (minutes on a 135M model)
    assert "dpo reference, train pairs" in out and "dpo reference, validation pairs" in out


def test_killed_and_resumed_run_ends_equal_to_uninterrupted(assets, monkeypatch):
    root, base, tok = assets
    common = {
        "max_steps": 5,
        "data": {"max_pairs": 4, "validation_fraction": 0.25},
        "engine": {"seed": 4, "device": "cpu", "threads": 1, "checkpoint_every": 2},
    }
    full = train(_cfg(root, base, "full", **common))

    class Killed(Exception):
        pass

    save = Engine.save

    def save_then_die(self, step, state):
        path = save(self, step, state)
        if step == 2:
            raise Killed
        return path

    monkeypatch.setattr(Engine, "save", save_then_die)
    with pytest.raises(Killed):
        train(_cfg(root, base, "resumed", **common))
    monkeypatch.setattr(Engine, "save", save)
    computed = []
    import rlhfkit.algos.dpo.trainer as trainer_module

    real = trainer_module.reference_logps
    monkeypatch.setattr(
        trainer_module, "reference_logps", lambda *a, **k: computed.append(1) or real(*a, **k)
    )
    resumed = train(_cfg(root, base, "resumed", **common))
    assert not computed  # the cache was read back, not recomputed from the moved policy
    a = load_file(str(full.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0)
    assert resumed.metrics["eval/rewards/accuracies"] == full.metrics["eval/rewards/accuracies"]
    (resumed.run_dir / REFERENCE_FILE).unlink()  # a checkpoint without its reference: refuse
    with pytest.raises(RuntimeError, match="reference log-probs"):
        train(_cfg(root, base, "resumed", **common))


def test_lora_live_reference_is_the_base_model(assets, monkeypatch):
    root, base, tok = assets
    import rlhfkit.algos.dpo.trainer as trainer_module

    seen = {}
    real = trainer_module.micro_batch_loss

    def spy(model, batch, ref, *args):
        seen.update(model=model, batch=batch, ref=ref)
        return real(model, batch, ref, *args)

    monkeypatch.setattr(trainer_module, "micro_batch_loss", spy)
    cfg = _cfg(root, base, "lora", max_steps=3, reference="live", optim={"lr": 5e-2})
    cfg.model.lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    train(cfg)
    policy, batch = seen["model"], seen["batch"]
    plain = load_policy(ModelConfig(name_or_path=str(base))).eval()
    with torch.no_grad():
        base_logps = pair_logps(plain, batch)
        ref_logps = seen["ref"](batch)
        policy_logps = pair_logps(policy.eval(), batch)
        with reference_context(policy, None):
            disabled = pair_logps(policy, batch)
    torch.testing.assert_close(ref_logps, base_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(disabled, base_logps, atol=1e-5, rtol=0)
    assert (policy_logps - base_logps).abs().max() > 1e-3  # the adapters did move the policy


def test_label_smoothing_needs_the_sigmoid_loss(assets):
    root, base, tok = assets
    with pytest.raises(ValueError, match="label_smoothing"):
        _cfg(root, base, "x", loss_type="ipo", label_smoothing=0.1)


@pytest.mark.parametrize("preset", ["dpo_sim", "dpo_hh_qwen0.5b"])
def test_presets_validate(preset):
    cfg = load_config(DPOConfig, preset=preset)
    assert cfg.model.name_or_path and cfg.data.train


def test_implicit_reward_accuracy_rises_on_simulated_feedback(tmp_path):
    """The world's noisy annotator pairs (what the RM trains on) from a tiny random GPT-2:
    held-out implicit-reward accuracy (0 at the start: π = π_ref, all ties) ends well above
    chance, against the world's own labels (deterministic from the seed)."""
    from rlhfkit.sim import make_world

    make_world(tmp_path / "w", seed=3, n_sft=50, n_sft_val=10, n_pref=600, n_pref_val=300,
               n_pref_test=20, n_ranked=5, n_ranked_test=5, n_prompts=10, n_val_prompts=5,
               n_eval_prompts=5, vocab_size=400)  # fmt: skip
    cfg = DPOConfig.model_validate(
        {
            "out_dir": str(tmp_path / "run"),
            "model": {"name_or_path": "tiny:gpt2-nano"},
            "tokenizer": str(tmp_path / "w" / "tokenizer"),
            "data": {
                "train": str(tmp_path / "w" / "preferences" / "train.jsonl"),
                "validation": str(tmp_path / "w" / "preferences" / "validation.jsonl"),
                "max_length": 96,
                "max_pairs": 16,
            },
            "optim": {"lr": 5e-3},
            "beta": 0.1,
            "epochs": 3,
            "eval_every": 10,
            "log_every": 10,
            "engine": {"seed": 0, "device": "cpu", "threads": 1},
        }
    )
    result = train(cfg)
    evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "eval/loss" in r]
    accs = [r["eval/rewards/accuracies"] for r in evals]
    # labels agree with the gold preference on ≈ 78 % of these pairs: that is the ceiling;
    # 300 held-out pairs: one standard error of an accuracy near ½ is 0.029
    assert sum(accs[-3:]) / 3 > 0.56, accs


@pytest.mark.slow  # compiles a GPT-2 block forward + backward: minutes on a CPU
def test_one_update_compiled_equals_eager(assets):
    from helpers import assert_compiled_equals_eager

    root, base, tok = assets

    def run(compile_: bool) -> list[dict]:
        engine = {"seed": 0, "device": "cpu", "threads": 1, "compile": compile_}
        cfg = _cfg(root, base, f"compiled{compile_}", max_steps=2, engine=engine)
        return [r for r in read_metrics(train(cfg).run_dir / "metrics.jsonl") if "loss/dpo" in r]

    assert_compiled_equals_eager(run, "loss/dpo")
