"""Reward-model trainer: learning signal, exact accumulation (pairs, margins, rankings, LM term),
one forward per answer for rankings, resume ≡ uninterrupted, normalisation, LoRA (presets: tests/test_presets.py).

Oracles: each reply scored alone and the loss written from its definition; the LM term against
the causal LM's own logits; a naive loop for the calibration table and gold agreement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from helpers import build_config
from safetensors.torch import load_file

from rlhfkit.algos.rm import (
    RMConfig,
    calibration_table,
    expected_calibration_error,
    pair_metrics,
    train,
)
from rlhfkit.algos.rm.trainer import accumulate_gradients, chosen_target_tokens
from rlhfkit.data import (
    DataError,
    collate_pairs,
    collate_ranked,
    collate_shared_prompt,
    encode_pairs,
    encode_ranked,
    read_preferences,
    read_ranked,
)
from rlhfkit.engine import Engine
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.models import ModelConfig, build_scalar_model, load_policy, load_reward_model
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def _pairs() -> list[dict]:
    """A learnable toy: the chosen reply ends in "yes.", the rejected one in "no.", so the
    label is readable at the last token and generalises to held-out prompts."""
    rows = []
    for i, w in enumerate(WORDS * 4):
        rows.append(
            {
                "prompt": f"is it a {w}?",
                "chosen": f"it is a {w}, yes." if i % 2 else "yes.",
                "rejected": "no." if i % 3 else f"it is a {w}, no.",
                "margin": 1.0 + (i % 3),
                "meta": {"chosen_gold": 1.0, "rejected_gold": 0.0 if i % 5 else 2.0},
            }
        )
    return rows


def _ranked() -> list[dict]:
    return [
        {"prompt": f"is it a {w}?", "responses": [f"yes, a {w}.", "maybe.", "no."]}
        for w in WORDS * 2
    ]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    rows = _pairs()
    texts = [r["prompt"] + " " + r["chosen"] + " " + r["rejected"] for r in rows]
    tok = train_tokenizer(texts * 5 + ["maybe."] * 5, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    base = save_tiny_model(model, root / "base", tok)
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "ranked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _ranked()))
    return root, base, tok


def _cfg(root: Path, base: Path, out: str, **kw) -> RMConfig:
    defaults = {
        "out_dir": str(root / out),
        "model": {"name_or_path": str(base)},
        "data": {"train": str(root / "pairs.jsonl"), "max_length": 32, "max_tokens": 256},
        "optim": {"lr": 3e-3, "max_grad_norm": 1.0},
        "log_every": 1,
        "normalize_samples": 10_000,
        "engine": {"seed": 0, "device": "cpu", "threads": 1},
    }
    return build_config(RMConfig, defaults, **kw)


def test_loss_falls_accuracy_rises_and_every_parameter_moves(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "learn", epochs=8, data={"validation_fraction": 0.25})
    result = train(cfg)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/rm" in r]
    first, last = rows[0]["loss/rm"], sum(r["loss/rm"] for r in rows[-3:]) / 3
    assert first == pytest.approx(math.log(2), abs=0.1)  # a fresh head: scores near 0
    assert last < 0.2, [r["loss/rm"] for r in rows]
    assert result.metrics["eval/accuracy"] == 1.0
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(result.model_dir / "model.safetensors"))
    for name, tensor in before.items():
        if name.startswith("lm_head"):
            continue  # the causal LM head is not part of the reward model
        if name == "transformer.ln_f.bias":
            # adds the same w·β to every score: a pairwise loss is blind to it (gradient 0); the
            # saved copy moves it only along the head's weight, by the folded score offset
            # (`models.scalar`, point 7)
            w = after["score.weight"].reshape(-1)
            delta = after[name] - tensor
            torch.testing.assert_close(delta, (delta @ w) / (w @ w) * w, atol=1e-6, rtol=0)
            continue
        assert not torch.equal(tensor, after[name]), f"{name} did not change"
    assert "score.weight" in after


def test_saved_model_is_normalised_and_reloads_with_the_same_scores(assets):
    root, base, tok = assets
    result = train(_cfg(root, base, "norm", max_steps=4, normalize="standardize"))
    rm = load_reward_model(result.model_dir)
    items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records, 32)
    batch = collate_pairs(items, tok.pad_token_id)
    scores = rm.score(batch["input_ids"], batch["attention_mask"]).double()
    # the reference set is every training reply (normalize_samples ≥ their number)
    assert float(scores.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scores.std()) == pytest.approx(1.0, abs=1e-4)
    assert result.metrics["rm/score_scale"] != 1.0


def _scores_alone(rm, rows: list[list[int]]) -> torch.Tensor:
    return torch.cat(
        [rm.score(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.bool)) for r in rows]
    )


@pytest.mark.parametrize("beta_rm,chunked", [(0.0, False), (0.5, False), (0.5, True)])
def test_pair_accumulation_equals_one_batch_and_the_definition(
    assets, beta_rm, chunked, monkeypatch
):
    root, base, tok = assets
    if chunked:  # the LM term's log-probs a few tokens at a time (core.head_logprobs' backward)
        import rlhfkit.core.logprobs as core_logprobs

        monkeypatch.setattr(core_logprobs, "LOGITS_CHUNK_ELEMENTS", 3 * tok.vocab_size)
    cfg = _cfg(root, base, "unused", use_margin=True, margin_scale=0.5, beta_rm=beta_rm)
    items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records[:7], 32)
    n_lm = sum(len(it.chosen_ids) - max(it.prompt_length, 1) for it in items)
    grads, sums = [], []
    for split in ([items], [items[:2], items[2:3], items[3:]]):
        torch.manual_seed(0)  # the new head's initialisation
        rm = build_scalar_model(ModelConfig(name_or_path=str(base))).eval()
        if beta_rm:
            rm.attach_lm_head(base)
        batches = [collate_pairs(part, tok.pad_token_id) for part in split]
        sums.append(accumulate_gradients(Accelerator(cpu=True), rm, batches, 7, n_lm, 1, cfg))
        grads.append({n: p.grad.clone() for n, p in rm.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sums[1], sums[0], atol=1e-5, rtol=1e-5)
    # the definition: mean over pairs of −log σ(r_c − r_r − 0.5·margin), each reply alone
    with torch.no_grad():
        c = _scores_alone(rm, [it.chosen_ids for it in items])
        r = _scores_alone(rm, [it.rejected_ids for it in items])
    m = torch.tensor([0.5 * it.margin for it in items])
    expected = -torch.nn.functional.logsigmoid(c - r - m).mean()
    torch.testing.assert_close(sums[0][0], expected, atol=1e-5, rtol=1e-5)
    assert float(sums[0][2]) == float((c > r).sum())
    if beta_rm:  # the LM term: the causal LM's own NLL of the chosen replies' tokens
        policy = load_policy(ModelConfig(name_or_path=str(base))).eval()
        total = 0.0
        with torch.no_grad():
            for it in items:
                ids = torch.tensor([it.chosen_ids])
                logp = torch.log_softmax(policy(input_ids=ids).logits[0].double(), -1)
                for t in range(max(it.prompt_length, 1), len(it.chosen_ids)):
                    total -= float(logp[t - 1, it.chosen_ids[t]])
        assert float(sums[0][1]) == pytest.approx(total / n_lm, rel=1e-5)


def test_ranked_lists_one_forward_per_answer_all_pairs_in_the_loss(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "unused", data={"ranked": True})
    items = encode_ranked(tok, read_ranked(root / "ranked.jsonl").records[:5], 32)
    rm = build_scalar_model(ModelConfig(name_or_path=str(base))).eval()
    rows_seen = []
    forward = rm.hidden_states

    def counting(ids, mask, position_ids=None, query=None):
        rows_seen.append(ids.shape[0])
        return forward(ids, mask, position_ids, query)

    rm.hidden_states = counting
    batches = [
        collate_ranked(items[:2], tok.pad_token_id),
        collate_ranked(items[2:], tok.pad_token_id),
    ]
    sums = accumulate_gradients(Accelerator(cpu=True), rm, batches, 5 * 3, 0, 1, cfg)
    assert rows_seen == [2 * 3, 3 * 3]  # K rows per list, not K(K−1)/2 pairs × 2
    with torch.no_grad():
        terms = []
        for it in items:
            s = _scores_alone(rm, list(it.sequences))
            terms += [
                -torch.nn.functional.logsigmoid(s[i] - s[j])
                for i in range(3)
                for j in range(i + 1, 3)
            ]
    torch.testing.assert_close(sums[0], torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_ranked_training_runs_end_to_end(assets):
    root, base, tok = assets
    cfg = _cfg(
        root,
        base,
        "ranked",
        max_steps=3,
        data={"train": str(root / "ranked.jsonl"), "ranked": True, "validation_fraction": 0.25},
    )
    result = train(cfg)
    assert result.metrics["eval/pairs"] > 0 and (result.model_dir / "config.json").is_file()


def test_ranked_lists_of_different_lengths_train_and_normalise(assets):
    """Lists of 2 and 3 replies (feedback collection drops duplicate samples) never share a
    batch, in training or in fitting the score offset."""
    root, base, tok = assets
    rows = _ranked()
    for r in rows[::2]:
        r["responses"] = r["responses"][:2]
    (root / "ranked_mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(
        root,
        base,
        "ranked_mixed",
        max_steps=2,
        normalize="offset",
        data={
            "train": str(root / "ranked_mixed.jsonl"),
            "ranked": True,
            "validation_fraction": 0.25,
        },
    )
    result = train(cfg)
    assert result.metrics["eval/pairs"] > 0
    assert result.metrics["rm/score_offset"] != 0.0


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "dropout": 0.0}])
def test_killed_and_resumed_run_ends_equal_to_uninterrupted(assets, monkeypatch, lora):
    root, base, tok = assets
    common = {
        "max_steps": 5,
        "beta_rm": 0.3,
        "model": {"name_or_path": str(base), "lora": lora},
        "engine": {"seed": 4, "device": "cpu", "threads": 1, "checkpoint_every": 2},
    }
    tag = "_lora" if lora else ""
    full = train(_cfg(root, base, "full" + tag, **common))

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
        train(_cfg(root, base, "resumed" + tag, **common))
    monkeypatch.setattr(Engine, "save", save)
    checkpoint = root / ("resumed" + tag) / "checkpoints" / "step_00000002"
    saved = load_file(str(checkpoint / "model.safetensors"))
    if lora:  # the frozen base is left out; the adapters and the head are there
        assert saved and all("lora_" in n or "score" in n for n in saved), sorted(saved)[:5]
        assert torch.load(checkpoint / "trainer_state.pt", weights_only=False)["frozen_not_saved"]
    else:
        assert any("wte" in n for n in saved)
    resumed = train(_cfg(root, base, "resumed" + tag, **common))
    a = load_file(str(full.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0)
    assert resumed.metrics["rm/score_offset"] == full.metrics["rm/score_offset"]


def test_lora_reward_model_moves_adapters_and_head_only(assets):
    root, base, tok = assets
    cfg = _cfg(root, base, "lora", max_steps=3, normalize="none")
    cfg.model.lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    result = train(cfg)
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(result.model_dir / "model.safetensors"))
    # merged weights: adapted matrices changed, layer norms and embeddings (not adapted) did not
    changed = {n for n in before if n in after and not torch.equal(before[n], after[n])}
    assert any("attn.c_attn.weight" in n for n in changed)
    assert not any("ln_" in n or "wte" in n or "wpe" in n for n in changed), changed


def test_margin_missing_is_a_clear_error(assets, tmp_path):
    root, base, tok = assets
    rows = _pairs()[:4]
    del rows[2]["margin"]
    path = tmp_path / "nomargin.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="nomargin.jsonl:3"):
        train(_cfg(root, base, "nomargin", use_margin=True, data={"train": str(path)}))


def test_calibration_table_and_gold_agreement_match_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(200, generator=g), torch.randn(200, generator=g)
    gold = torch.randn(200, generator=g).double()
    gold[::7] = float("nan")  # unknown gold
    gold[1::11] = 0.0  # gold tie: not decided
    out = pair_metrics(chosen, rejected, gold, bins=5)
    gaps = [float(c - r) for c, r in zip(chosen, rejected, strict=True)]
    assert out["eval/accuracy"] == pytest.approx(sum(x > 0 for x in gaps) / 200)
    assert out["eval/margin"] == pytest.approx(sum(gaps) / 200)
    agree = decided = label = 0
    for x, y in zip(gaps, gold.tolist(), strict=True):
        if math.isnan(y) or y == 0:
            continue
        decided += 1
        agree += (x > 0) == (y > 0)
        label += y > 0
    assert out["eval/gold_pairs"] == decided
    assert out["eval/gold_agreement"] == pytest.approx(agree / decided)
    assert out["eval/label_ceiling"] == pytest.approx(label / decided)
    rows = {}
    for x in gaps:
        p = 1 / (1 + math.exp(-abs(x)))
        k = min(int((p - 0.5) / 0.1), 4)
        rows.setdefault(k, []).append((p, x > 0))
    table = calibration_table(torch.tensor(gaps), bins=5)
    assert [r["count"] for r in table] == [len(rows[k]) for k in sorted(rows)]
    for r, k in zip(table, sorted(rows), strict=True):
        assert r["confidence"] == pytest.approx(sum(p for p, _ in rows[k]) / len(rows[k]))
        assert r["accuracy"] == pytest.approx(sum(a for _, a in rows[k]) / len(rows[k]))
    ece = sum(
        len(v) / 200 * abs(sum(p for p, _ in v) / len(v) - sum(a for _, a in v) / len(v))
        for v in rows.values()
    )
    assert expected_calibration_error(table) == pytest.approx(ece)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["pairs", "ranked"])
def test_shared_prompt_rows_equal_separate_rows(assets, attn, kind):
    """One packed row per comparison (prompt once) gives each reply's own-row scores, the
    same loss, LM term and gradients (eval mode: no dropout)."""
    root, base, tok = assets
    if kind == "pairs":
        items = encode_pairs(tok, read_preferences(root / "pairs.jsonl").records[:5], 32)
        separate = collate_pairs(items, tok.pad_token_id)
        n_cmp = 5
    else:
        items = encode_ranked(tok, read_ranked(root / "ranked.jsonl").records[:4], 32)
        separate = collate_ranked(items, tok.pad_token_id)
        n_cmp = 4 * 3
    shared = collate_shared_prompt(items, tok.pad_token_id)
    assert shared["input_ids"].shape[0] == len(items)
    assert shared["attention_mask"].sum() < separate["attention_mask"].sum()  # prompt once
    cfg = _cfg(root, base, "unused", beta_rm=0.7, data={"ranked": kind == "ranked"})
    n_lm = sum(chosen_target_tokens(it) for it in items)
    results = []
    for batch in (separate, shared):
        torch.manual_seed(0)
        rm = build_scalar_model(ModelConfig(name_or_path=str(base), attn_implementation=attn))
        rm.attach_lm_head(base)
        rm.eval()
        sums = accumulate_gradients(Accelerator(cpu=True), rm, [batch], n_cmp, n_lm, 1, cfg)
        results.append((sums, {n: p.grad.clone() for n, p in rm.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4)


def test_disable_dropout_trains_as_if_the_model_had_no_dropout(assets, tmp_path):
    """disable_dropout=true on a model with dropout 0.5 ends at the weights of the same model
    saved with dropout 0 (oracle); with the option off the dropout changes the result."""
    root, base, tok = assets
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.5
    noisy = save_tiny_model(model, tmp_path / "noisy", tok)

    def final_weights(folder: Path, out: str, **kw) -> dict[str, torch.Tensor]:
        cfg = _cfg(root, folder, out, max_steps=3, normalize="none", **kw)
        return load_file(str(train(cfg).model_dir / "model.safetensors"))

    oracle = final_weights(base, "no_dropout")
    off = final_weights(noisy, "dropout_off", disable_dropout=True)
    on = final_weights(noisy, "dropout_on")
    for name, tensor in oracle.items():
        torch.testing.assert_close(off[name], tensor, atol=0, rtol=0)
    assert any(not torch.equal(on[n], t) for n, t in oracle.items())


def test_raw_template_trains_and_rejects_dialogues_by_file_and_line(assets, tmp_path):
    root, base, tok = assets
    result = train(_cfg(root, base, "raw", epochs=2, data={"prompt_template": "raw"}))
    assert result.metrics["rm/accuracy"] > 0.5
    hh = "\n\nHuman: is it a cat?\n\nAssistant: maybe.\n\nHuman: is it?\n\nAssistant:"
    rows = [{"chosen": hh + " yes.", "rejected": hh + " no."}] * 3
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(root, base, "raw2", data={"train": str(path), "prompt_template": "raw"})
    with pytest.raises(ValueError, match=r"dialogues\.jsonl:1: prompt: .*one-turn.*3 messages"):
        train(cfg)


@pytest.mark.slow  # compiles a GPT-2 block forward + backward: minutes on a CPU
def test_one_update_compiled_equals_eager(assets):
    from helpers import assert_compiled_equals_eager

    root, base, tok = assets

    def run(compile_: bool) -> list[dict]:
        engine = {"seed": 0, "device": "cpu", "threads": 1, "compile": compile_}
        cfg = _cfg(root, base, f"compiled{compile_}", max_steps=2, engine=engine)
        return [r for r in read_metrics(train(cfg).run_dir / "metrics.jsonl") if "loss/rm" in r]

    assert_compiled_equals_eager(run, "loss/rm")
