"""KTO: the loss and the reference point z₀ against a naive loop from the paper's equations
(clamp at 0, weights), mismatched partners, one trainer step against a hand-written step,
accumulation ≡ one batch, the ratings export and a column mapping read as they are, one-label
files refused in one line, the paper's weight rule, resume ≡ uninterrupted, LoRA, learning on
the simulated world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel
from typer.testing import CliRunner

from rlhfkit.algos.kto import KTOConfig, train
from rlhfkit.algos.kto.trainer import (
    class_weights,
    kto_items,
    micro_batch_loss,
    partners,
    reference_point,
)
from rlhfkit.config import load_config
from rlhfkit.core import kto_losses, kto_reference_point
from rlhfkit.data import DataError, encode_pairs, read_unpaired
from rlhfkit.engine import Engine, accumulate
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.models import ModelConfig, load_policy
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.types import PreferencePair, UnpairedExample, user
from rlhfkit.update.pairs import collate, pair_logps
from rlhfkit.update.reference import REFERENCE_FILE

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def _rows() -> list[dict]:
    """32 rated replies, 16 prompts × 2: a yes-answer naming the word is desirable, "no." not;
    in the ratings export's shape (meta with the rating and the annotator)."""
    rows = []
    for i, w in enumerate(WORDS * 2):
        for good in (True, False):
            rows.append(
                {
                    "prompt": f"is it a {w}? ({i})",
                    "completion": f"it is a {w}, yes." if good else "no, no.",
                    "label": good,
                    "meta": {"annotator": f"a{i % 3}", "rating": 5 if good else 1},
                }
            )
    return rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("kto")
    rows = _rows()
    texts = [r["prompt"] + " " + r["completion"] for r in rows]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    base = save_tiny_model(
        build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0), root / "base", tok
    )
    save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1), root / "other", tok)
    (root / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, base, tok


def _cfg(root: Path, base: Path, out: str, **kw) -> KTOConfig:
    data = {"train": str(root / "ratings.jsonl"), "max_length": 32, "max_tokens": 512}
    data.update(kw.pop("data", {}))
    raw = {
        "out_dir": str(root / out),
        "model": {"name_or_path": str(base)},
        "data": data,
        "optim": {"lr": 1e-3, "max_grad_norm": 1.0},
        "log_every": 1,
        "engine": {"seed": 0, "device": "cpu", "threads": 1},
    }
    raw.update(kw)
    return KTOConfig.model_validate(raw)


def _sig(x):
    """σ of a float, or of a scalar tensor (keeping its graph)."""
    return 1.0 / (1.0 + (torch.exp(-x) if isinstance(x, torch.Tensor) else math.exp(-x)))


def naive_kto(pol, ref, pol_kl, ref_kl, labels, beta, lam_d, lam_u):
    """KTO paper eq. 8 and §4.1, one example at a time: z₀ = max(0, mean mismatched log-ratio),
    v = λ_D σ(β(r − z₀)) or λ_U σ(β(z₀ − r)), loss λ_y − v."""
    m = len(pol_kl)
    z0 = max(0.0, sum(pol_kl[i] - ref_kl[i] for i in range(m)) / m)
    losses = []
    for i in range(len(pol)):
        r = pol[i] - ref[i]
        if labels[i]:
            losses.append(lam_d - lam_d * _sig(beta * (r - z0)))
        else:
            losses.append(lam_u - lam_u * _sig(beta * (z0 - r)))
    return losses, z0


@pytest.mark.parametrize("shift", [+0.8, -0.8])  # mean mismatched log-ratio > 0, and < 0: clamp
def test_kto_loss_and_reference_point_equal_the_papers_equations(shift):
    g = torch.Generator().manual_seed(0)
    pol, ref = torch.randn(9, generator=g, dtype=torch.float64) * 3 - 20, None
    ref = pol + torch.randn(9, generator=g, dtype=torch.float64)
    ref_kl = torch.randn(9, generator=g, dtype=torch.float64) * 2 - 30
    pol_kl = ref_kl + shift + torch.randn(9, generator=g, dtype=torch.float64) * 0.3
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    beta, lam_d, lam_u = 0.7, 1.3, 0.6
    want, want_z0 = naive_kto(pol.tolist(), ref.tolist(), pol_kl.tolist(), ref_kl.tolist(),
                              labels.tolist(), beta, lam_d, lam_u)  # fmt: skip
    z0 = kto_reference_point((pol_kl - ref_kl).sum(), 9)
    assert float(z0) == pytest.approx(want_z0, rel=1e-12, abs=1e-15)
    assert (want_z0 == 0.0) == (shift < 0)  # the clamp is exercised by the negative shift
    out = kto_losses(pol, ref, labels, z0, beta, lam_d, lam_u)
    assert out.losses.tolist() == pytest.approx(want, rel=1e-12)
    assert out.rewards.tolist() == pytest.approx((beta * (pol - ref)).tolist(), rel=1e-12)
    # at r = z₀ every loss is λ_y / 2
    half = kto_losses(ref + 0.25, ref, labels, 0.25, beta, lam_d, lam_u).losses
    assert half.tolist() == pytest.approx([(lam_d if y else lam_u) / 2 for y in labels.tolist()])


def test_no_gradient_flows_through_the_reference_point():
    pol_kl = torch.tensor([1.0, 2.0], requires_grad=True)
    pol = torch.tensor([-3.0, -4.0], requires_grad=True)
    z0 = kto_reference_point(pol_kl.sum(), 2)
    assert not z0.requires_grad
    out = kto_losses(pol, torch.tensor([-3.5, -3.0]), torch.tensor([True, False]), z0, 0.5)
    out.losses.sum().backward()
    assert pol_kl.grad is None and pol.grad is not None
    with pytest.raises(ValueError, match="no mismatched pairs"):
        kto_reference_point(torch.tensor(0.0), 0)


def test_partners_are_the_previous_example_with_another_prompt():
    recs = [UnpairedExample(user(p), c, True) for p, c in
            [("a", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("c", "5")]]  # fmt: skip
    assert partners(recs) == [4, 4, 1, 2, 2]
    same = [UnpairedExample(user("a"), str(i), True) for i in range(3)]
    assert partners(same) == [0, 1, 2]  # no other prompt: no mismatched pair exists


def _naive_rows(model, items) -> torch.Tensor:
    """Σ log p of each reply's tokens, each sequence alone through the HF model, float64."""
    out = torch.zeros(2, len(items), dtype=torch.float64)
    for i, it in enumerate(items):
        for side, seq in enumerate((it.chosen_ids, it.rejected_ids)):
            logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].double(), -1)
            out[side, i] = sum(logp[t - 1, seq[t]] for t in range(it.prompt_length, len(seq)))
    return out


def test_one_trainer_step_equals_a_hand_written_step(assets):
    """max_steps 1 over every example in one micro-batch, a reference that is not the policy,
    unequal weights: the saved weights equal a naive step (each example's reply and its
    mismatched one — the previous example's, every prompt here being distinct — through
    per-row forwards, z₀ and the loss from the paper, AdamW) from the same start. Adam's eps
    = 1 makes the update scale with the gradient."""
    root, base, tok = assets
    lr, beta, lam_d, lam_u = 1e-2, 0.5, 1.0, 1.3
    cfg = _cfg(
        root, base, "one_step", max_steps=1, beta=beta, desirable_weight=lam_d,
        undesirable_weight=lam_u, ref_model=str(root / "other"),
        optim={"lr": lr, "max_grad_norm": None, "eps": 1.0},
        data={"validation_fraction": 0.0, "max_tokens": 100_000},
    )  # fmt: skip
    lines = (root / "ratings.jsonl").read_text().splitlines()
    # 8 desirable then 8 undesirable examples, 16 distinct prompts
    distinct = [json.loads(line) for line in lines[0:16:2] + lines[17:32:2]]
    (root / "distinct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in distinct))
    cfg.data.train = str(root / "distinct.jsonl")
    result = train(cfg)
    rows = distinct
    pairs = [
        PreferencePair(user(r["prompt"]), r["completion"], rows[i - 1]["completion"])
        for i, r in enumerate(rows)
    ]
    items = encode_pairs(tok, pairs, 32)
    labels = [r["label"] for r in rows]
    model = GPT2LMHeadModel.from_pretrained(base).eval()
    with torch.no_grad():
        ref = _naive_rows(GPT2LMHeadModel.from_pretrained(root / "other").eval(), items)
        pol_kl = _naive_rows(model, items)[1]
    pol = _naive_rows(model, items)[0]
    losses, z0 = naive_kto(pol, ref[0].tolist(), pol_kl.tolist(), ref[1].tolist(), labels,
                           beta, lam_d, lam_u)  # fmt: skip
    assert z0 > 0.1  # the reference differs from the policy: z₀ matters
    loss = sum(losses) / len(losses)
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
    m = read_metrics(result.run_dir / "metrics.jsonl")[0]
    assert m["loss/kto"] == pytest.approx(loss.item(), rel=1e-5)
    assert m["kl"] == pytest.approx(z0, rel=1e-5)
    rewards = beta * (pol.detach() - ref[0])
    good = torch.tensor(labels)
    assert m["rewards/chosen"] == pytest.approx(float(rewards[good].mean()), rel=1e-4)
    assert m["rewards/rejected"] == pytest.approx(float(rewards[~good].mean()), rel=1e-4)
    assert (m["count/chosen"], m["count/rejected"]) == (8, 8)


def test_accumulation_equals_one_batch(assets):
    """z₀ from every micro-batch of the step, the loss over the step's example count: three
    micro-batches give the gradient, z₀ and stats of one batch."""
    root, base, tok = assets
    cfg = _cfg(root, base, "unused", beta=0.3, desirable_weight=1.2)
    records = read_unpaired(root / "ratings.jsonl").records[:7]
    items, labels = kto_items(tok, records, cfg)
    # a reference below the policy (z₀ > 0, not clamped), per example its own offset
    ref_logps = torch.randn(2, 7, generator=torch.Generator().manual_seed(0)) - 60
    ref = lambda x: ref_logps[:, x["index"]]  # noqa: E731
    grads, sums, z0s = [], [], []
    for split in ([list(range(7))], [[0, 1], [2], [3, 4, 5, 6]]):
        model = load_policy(ModelConfig(name_or_path=str(base))).eval()
        batches = []
        for b in split:
            batch = collate([items[i] for i in b], tok.pad_token_id, True)
            batch.update(index=torch.tensor(b), desirable=labels[b])
            batches.append(batch)
        acc = Accelerator(cpu=True)
        z0 = reference_point(acc, model, batches, ref, 7)
        thunks = [
            lambda b=b, model=model, z0=z0: micro_batch_loss(
                model, b, ref, z0, 7, 1, cfg, (1.2, 1.0)
            )
            for b in batches
        ]
        sums.append(accumulate(acc, model, thunks))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        z0s.append(float(z0))
    assert z0s[0] > 1.0 and z0s[1] == pytest.approx(z0s[0], rel=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)
    for key in sums[0]:
        assert sums[1][key] == pytest.approx(sums[0][key], rel=1e-5, abs=1e-6)


def test_ratings_export_and_a_column_mapping_are_read_as_they_are(assets, tmp_path):
    root, base, tok = assets
    recs = read_unpaired(root / "ratings.jsonl").records
    assert len(recs) == 32 and sum(r.label for r in recs) == 16
    assert recs[0].meta["annotator"] == "a0" and recs[0].meta["rating"] == 5
    csv = tmp_path / "thumbs.csv"
    csv.write_text("question,reply,thumbs_up\nhi?,hello.,true\nbye?,no.,0\nsun?,yes.,FALSE\n")
    got = read_unpaired(csv, columns={"prompt": "question", "completion": "reply",
                                      "label": "thumbs_up"})  # fmt: skip
    assert [(r.completion, r.label) for r in got.records] == [
        ("hello.", True), ("no.", False), ("yes.", False)
    ]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b", "label": "maybe"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: label: expected true or false"):
        read_unpaired(bad)


def test_a_file_with_one_kind_of_label_is_one_line_and_exit_2(assets, tmp_path):
    from rlhfkit.cli import app

    root, base, tok = assets
    only = tmp_path / "only_good.jsonl"
    only.write_text("".join(json.dumps(r) + "\n" for r in _rows() if r["label"]))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["kto", f"out_dir={out}", f"model.name_or_path={base}",
                                      f"data.train={only}", "data.max_length=32",
                                      "engine.device=cpu"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "all 16 examples are desirable (label true); KTO needs both kinds" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # refused before any run directory was made


def test_the_papers_weight_rule_for_imbalanced_data(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "x")
    lam_d, lam_u, warning = class_weights(cfg, 10, 30)  # ratio 1/3: outside [1, 4/3]
    assert (lam_d, lam_u) == (1.0, 1.0) and "desirable_weight=3" in warning
    balanced = _cfg(root, base, "x", balance_weights=True, undesirable_weight=0.5)
    lam_d, lam_u, warning = class_weights(balanced, 10, 30)
    assert (lam_d, lam_u, warning) == (1.5, 0.5, "")  # λ_D·n_D = λ_U·n_U
    assert class_weights(_cfg(root, base, "x", desirable_weight=1.2), 10, 10)[2] == ""


def test_killed_and_resumed_run_ends_equal_to_uninterrupted(assets, monkeypatch):
    root, base, tok = assets
    common = {
        "max_steps": 5,
        "data": {"max_examples": 4, "validation_fraction": 0.25},
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
    resumed = train(_cfg(root, base, "resumed", **common))
    a = load_file(str(full.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0)
    assert resumed.metrics["eval/loss"] == full.metrics["eval/loss"]
    assert (resumed.run_dir / REFERENCE_FILE).is_file()


def test_lora_trains_against_the_base_model_with_a_live_reference(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "lora", max_steps=4, reference="live", optim={"lr": 5e-2},
               data={"validation_fraction": 0.25})  # fmt: skip
    cfg.model.lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    result = train(cfg)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/kto" in r]
    assert rows[0]["kl"] == 0.0 and rows[0]["rewards/chosen"] == 0.0  # π = π_ref at step 1
    assert rows[-1]["rewards/margins"] > 0.1
    assert not (result.run_dir / REFERENCE_FILE).exists()


def test_preset_validates():
    cfg = load_config(KTOConfig, preset="kto_sim")
    assert cfg.model.name_or_path and cfg.data.train


def test_implicit_reward_ranks_held_out_comparisons_after_kto_on_simulated_feedback(tmp_path):
    """The world's noisy annotator pairs split into unpaired examples (chosen → desirable,
    rejected → undesirable: the KTO paper's own conversion) from a tiny random GPT-2: on the
    300 held-out *pairs*, the implicit reward β·log π/π_ref ranks the annotators' choice first
    well above chance (0 at the start: π = π_ref, all ties)."""
    from rlhfkit.sim import make_world

    make_world(tmp_path / "w", seed=3, n_sft=50, n_sft_val=10, n_pref=600, n_pref_val=300,
               n_pref_test=20, n_ranked=5, n_ranked_test=5, n_prompts=10, n_val_prompts=5,
               n_eval_prompts=5, vocab_size=400)  # fmt: skip
    rows = []
    for line in (tmp_path / "w" / "preferences" / "train.jsonl").read_text().splitlines():
        pair = json.loads(line)
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    (tmp_path / "thumbs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok_dir = tmp_path / "w" / "tokenizer"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    base = save_tiny_model(build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0),
                           tmp_path / "base", tok)  # fmt: skip
    cfg = KTOConfig.model_validate(
        {
            "out_dir": str(tmp_path / "run"),
            "model": {"name_or_path": str(base)},
            "data": {"train": str(tmp_path / "thumbs.jsonl"), "validation_fraction": 0.0,
                     "max_length": 96, "max_examples": 16},
            "optim": {"lr": 5e-3},
            "beta": 0.1,
            "epochs": 4,
            "log_every": 20,
            "engine": {"seed": 0, "device": "cpu", "threads": 1},
        }
    )  # fmt: skip
    result = train(cfg)
    from rlhfkit.data import read_preferences

    val = read_preferences(tmp_path / "w" / "preferences" / "validation.jsonl").records
    items = encode_pairs(tok, val, 96)
    policy = load_policy(ModelConfig(name_or_path=str(result.model_dir))).eval()
    ref = load_policy(ModelConfig(name_or_path=str(base))).eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(items), 32):
            batch = collate(items[i : i + 32], tok.pad_token_id, True)
            h = pair_logps(policy, batch) - pair_logps(ref, batch)
            correct += int((h[0] > h[1]).sum())
    accuracy = correct / len(items)
    # labels agree with the gold preference on ≈ 78 % of these pairs: that is the ceiling;
    # 300 held-out pairs: one standard error of an accuracy near ½ is 0.029
    print(f"held-out pair accuracy of the implicit reward: {accuracy:.3f}")
    assert accuracy > 0.56, accuracy


def test_a_live_reference_trains_as_the_cached_one_with_one_pass_per_micro_batch(
    assets, monkeypatch
):
    """The live reference's log-probs are taken once per micro-batch and step, and shared by z₀
    and the loss: as many reference passes as loss calls, and the weights the cached reference
    gives (up to float rounding: the cached pass batches the rows differently)."""
    import rlhfkit.algos.kto.trainer as kto_trainer
    import rlhfkit.update.reference as reference_module

    root, base, tok = assets
    common = {"max_steps": 3, "data": {"validation_fraction": 0.0}}
    cached = train(_cfg(root, base, "cached", reference="cached", **common))
    passes, losses = [], []
    live_reference = reference_module.live_reference

    def counted_reference(*args, **kwargs):
        passes.append(1)
        return live_reference(*args, **kwargs)

    def counted(loss):
        def wrapped(*args, **kwargs):
            losses.append(1)
            return loss(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(reference_module, "live_reference", counted_reference)
    for name in ("micro_batch_loss", "one_pass_loss"):
        monkeypatch.setattr(kto_trainer, name, counted(getattr(kto_trainer, name)))
    live = train(_cfg(root, base, "live", reference="live", **common))
    assert len(losses) >= 3 and len(passes) == len(losses)
    a = load_file(str(cached.model_dir / "model.safetensors"))
    b = load_file(str(live.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # compiles a GPT-2 block forward + backward: minutes on a CPU
def test_one_update_compiled_equals_eager(assets):
    from helpers import assert_compiled_equals_eager

    root, base, tok = assets

    def run(compile_: bool) -> list[dict]:
        engine = {"seed": 0, "device": "cpu", "threads": 1, "compile": compile_}
        cfg = _cfg(root, base, f"compiled{compile_}", max_steps=2, engine=engine)
        return [r for r in read_metrics(train(cfg).run_dir / "metrics.jsonl") if "loss/kto" in r]

    assert_compiled_equals_eager(run, "loss/kto")


@pytest.mark.parametrize("reference", ["cached", "live"])
def test_z0_from_the_loss_forward_equals_its_own_forward(assets, monkeypatch, reference):
    """A step of one micro-batch takes z₀ from the loss forward's mismatched rows
    (`one_pass_loss`); the weights after 3 steps equal those of the separate no-gradient z₀
    forward (`reference_point`, what steps of several micro-batches do)."""
    import rlhfkit.algos.kto.trainer as kto_trainer

    root, base, tok = assets
    common = {"max_steps": 3, "data": {"validation_fraction": 0.0}, "reference": reference}
    common["ref_model"] = str(base)  # the policy starts from another model: z₀ > 0, not 0
    passes = []
    one_pass_loss = kto_trainer.one_pass_loss

    def counted(*args, **kwargs):
        passes.append(1)
        return one_pass_loss(*args, **kwargs)

    monkeypatch.setattr(kto_trainer, "one_pass_loss", counted)
    one = train(_cfg(root, root / "other", f"one_{reference}", **common))
    assert len(passes) == 3
    monkeypatch.setattr(kto_trainer, "one_pass", lambda micro_batches, world: False)
    two = train(_cfg(root, root / "other", f"two_{reference}", **common))
    a = load_file(str(one.model_dir / "model.safetensors"))
    b = load_file(str(two.model_dir / "model.safetensors"))
    start = load_file(str(root / "other" / "model.safetensors"))
    assert any(not torch.equal(a[n], start[n]) for n in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)
    rows = [read_metrics(r.run_dir / "metrics.jsonl") for r in (one, two)]
    kl = [[r["kl"] for r in rr if "kl" in r] for rr in rows]
    assert kl[0] == kl[1] and max(kl[0]) > 0  # z₀ > 0 on a step: it weighed in
