"""On-policy comparisons labelled by the simulated annotators (`rlhfkit.sim.feedback`)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data import read_preferences, read_prompts, read_ranked
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.rollout import RolloutConfig
from rlhfkit.sim import Annotator, judge, make_annotators, make_world
from rlhfkit.sim.feedback import annotators_from_manifest, collect_comparisons, gold_choices

SMALL = dict(
    n_sft=20, n_sft_val=5, n_pref=20, n_pref_val=5, n_pref_test=5, n_ranked=3, n_ranked_test=3,
    n_prompts=24, n_eval_prompts=5, vocab_size=400,
)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    manifest = make_world(root, seed=5, **SMALL)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    prompts = read_prompts(root / "prompts" / "train.jsonl").records
    policy = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1)
    return root, manifest, tok, prompts, policy


def test_annotators_from_manifest_are_the_worlds_annotators(world):
    root, manifest, *_ = world
    info = manifest["annotators"]
    expected = make_annotators(
        len(info["length_biases"]), info["temperature"], manifest["sizes"]["length_bias_std"], 5
    )
    assert annotators_from_manifest(root) == expected


def test_annotators_from_manifest_names_the_file_and_field(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(ValueError, match=r"manifest\.json: field 'annotators'"):
        annotators_from_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="rlhfkit sim make"):
        annotators_from_manifest(tmp_path / "nowhere")


def test_collect_comparisons_labels_policy_samples(world):
    root, _, tok, prompts, policy = world
    cfg = RolloutConfig(max_new_tokens=8, temperature=1.0, batch_size=10)
    # a near-noiseless annotator: the gold-better reply must win every decided pair
    sharp = [Annotator(temperature=1e-3, length_bias=0.0, name="sharp")]
    calls = []
    rows = collect_comparisons(
        policy, tok, prompts, sharp, cfg, seed=3, progress=lambda d, t: calls.append((d, t))
    )
    assert 0 < len(rows) <= len(prompts)
    assert calls[-1] == (2 * len(prompts), 2 * len(prompts))
    decided = 0
    for row in rows:
        m = row["meta"]
        assert row["chosen"] != row["rejected"]
        assert m["chosen_gold"] == judge(row["prompt"], row["chosen"]).score
        assert m["rejected_gold"] == judge(row["prompt"], row["rejected"]).score
        assert m["chosen_behaviour"] == judge(row["prompt"], row["chosen"]).behaviour
        if m["chosen_gold"] != m["rejected_gold"]:
            decided += 1
            assert m["chosen_gold"] > m["rejected_gold"]
    assert decided > 0
    assert gold_choices(rows) == (decided, decided)  # the noiseless annotator never disagrees
    # reproducible from the seed, and a different seed samples differently
    again = collect_comparisons(policy, tok, prompts, sharp, cfg, seed=3)
    assert again == rows
    other = collect_comparisons(policy, tok, prompts, sharp, cfg, seed=4)
    assert other != rows


def test_cli_collect_writes_pairs_the_rm_reader_accepts(world, tmp_path):
    root, _, tok, _, policy = world
    save_tiny_model(policy, tmp_path / "policy", tok)
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(
        app,
        ["sim", "collect", "--world", str(root), "--policy", str(tmp_path / "policy"),
         "-o", str(out), "-n", "12", "--max-new-tokens", "8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "comparisons" in result.output
    pairs = read_preferences(out).records
    assert 0 < len(pairs) <= 12
    assert all(p.meta["source"] == "policy" for p in pairs)


def test_collect_comparisons_ranks_k_samples(world):
    root, _, tok, prompts, policy = world
    cfg = RolloutConfig(max_new_tokens=8, temperature=1.0, batch_size=10)
    sharp = [Annotator(temperature=1e-3, length_bias=0.0, name="sharp")]
    rows = collect_comparisons(policy, tok, prompts, sharp, cfg, seed=3, k=4)
    assert rows and all(2 <= len(r["responses"]) <= 4 for r in rows)
    for row in rows:
        replies, gold = row["responses"], row["meta"]["gold"]
        assert len(set(replies)) == len(replies) and all(replies)
        assert gold == [judge(row["prompt"], r).score for r in replies]
        assert gold == sorted(gold, reverse=True)  # a noiseless annotator ranks by gold
    assert collect_comparisons(policy, tok, prompts, sharp, cfg, seed=3, k=4) == rows
    # the RM's ranked reader accepts them
    out = root / "ranked_feedback.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_ranked(out).records) == len(rows)
    with pytest.raises(ValueError, match="k must be at least 2"):
        collect_comparisons(policy, tok, prompts, sharp, cfg, k=1)
