"""`make_world` and `rlhfkit sim`: determinism, formats the project's readers load, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.data import read_preferences, read_prompts, read_ranked, read_sft, split_hh_transcript
from rlhfkit.sim import judge, make_world
from rlhfkit.sim.cli import app
from rlhfkit.sim.world import parse_task

SMALL = {
    "n_sft": 400,
    "n_sft_val": 50,
    "n_pref": 600,
    "n_pref_val": 50,
    "n_pref_test": 80,
    "n_ranked": 40,
    "n_ranked_test": 20,
    "n_prompts": 60,
    "n_val_prompts": 30,
    "n_eval_prompts": 60,
    "vocab_size": 0,
}
FILES = [
    "sft/train",
    "sft/validation",
    "preferences/train",
    "preferences/validation",
    "preferences/test",
    "hh/train",
    "hh/validation",
    "hh/test",
    "ranked/train",
    "ranked/test",
    "prompts/train",
    "prompts/validation",
    "prompts/eval",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, make_world(out, seed=7, **SMALL)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes(world, tmp_path):
    out, manifest = world
    again = make_world(tmp_path / "again", seed=7, **SMALL)
    for name in FILES:
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (
            out / f"{name}.jsonl"
        ).read_bytes()
    assert {**again, "generation_seconds": 0} == {**manifest, "generation_seconds": 0}
    other = make_world(tmp_path / "other", seed=8, **{**SMALL, "n_pref": 50})
    assert (tmp_path / "other/sft/train.jsonl").read_bytes() != (
        out / "sft/train.jsonl"
    ).read_bytes()
    assert other["counts"]["preferences/train"] == 50


def test_files_load_with_the_project_readers(world):
    out, manifest = world
    readers = {"sft": read_sft, "preferences": read_preferences, "hh": read_preferences}
    readers |= {"ranked": read_ranked, "prompts": read_prompts}
    for name in FILES:
        result = readers[name.split("/")[0]](out / f"{name}.jsonl")
        assert len(result.records) == manifest["counts"][name] == _expected_count(name)
    assert json.loads((out / "manifest.json").read_text()) == manifest


def _expected_count(name: str) -> int:
    key = {
        "sft/train": "n_sft",
        "sft/validation": "n_sft_val",
        "preferences/train": "n_pref",
        "preferences/validation": "n_pref_val",
        "preferences/test": "n_pref_test",
        "ranked/train": "n_ranked",
        "ranked/test": "n_ranked_test",
        "prompts/train": "n_prompts",
        "prompts/validation": "n_val_prompts",
        "prompts/eval": "n_eval_prompts",
    }[name.replace("hh/", "preferences/")]
    return SMALL[key]


def test_hh_transcripts_are_the_preference_pairs(world):
    out, _ = world
    for split in ("train", "test"):
        for pref, hh in zip(
            _rows(out / f"preferences/{split}.jsonl"), _rows(out / f"hh/{split}.jsonl"), strict=True
        ):
            chosen = split_hh_transcript(hh["chosen"])
            assert chosen.response == pref["chosen"]
            assert split_hh_transcript(hh["rejected"]).response == pref["rejected"]
            prompt = pref["prompt"]
            turns = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
            assert [m.content for m in chosen.prompt] == turns
            assert hh["chosen"].startswith("\n\nHuman: ")


def test_meta_matches_the_gold_scorer_and_labels_are_noisy(world):
    out, manifest = world
    rows = _rows(out / "preferences/train.jsonl")
    for row in rows:
        meta = row["meta"]
        assert judge(row["prompt"], row["chosen"]).score == meta["chosen_gold"]
        assert judge(row["prompt"], row["rejected"]).score == meta["rejected_gold"]
        assert judge(row["prompt"], row["rejected"]).behaviour == meta["rejected_behaviour"]
        assert meta["chosen_behaviour"] != meta["rejected_behaviour"]
    decided = [r for r in rows if r["meta"]["chosen_gold"] != r["meta"]["rejected_gold"]]
    win = sum(r["meta"]["chosen_gold"] > r["meta"]["rejected_gold"] for r in decided) / len(decided)
    assert win == manifest["annotators"]["measured_gold_win_rate"]
    assert 0.7 < win < 0.9  # most, not all
    assert 0.60 <= manifest["annotators"]["measured_agreement"] <= 0.75
    assert manifest["annotators"]["expected_agreement"] == pytest.approx(0.68, abs=1e-3)


def test_sft_is_good_leaning_but_imperfect(world):
    out, _ = world
    rows = _rows(out / "sft/train.jsonl")
    ideal = {"correct", "refusal"}
    share = sum(
        r["meta"]["behaviour"] in ideal
        or (r["meta"]["family"] == "unknowable" and r["meta"]["behaviour"] == "abstain")
        for r in rows
    ) / len(rows)
    assert 0.55 <= share <= 0.70  # sft_ideal = 0.62; 400 rows: s.e. 0.024
    for r in rows:
        assert r["meta"]["gold"] == judge(r["prompt"], r["response"]).score


def test_ranked_lists_and_eval_prompts(world):
    out, _ = world
    for row in _rows(out / "ranked/train.jsonl"):
        assert len(row["responses"]) == 4 == len(set(row["meta"]["behaviours"]))
        assert row["meta"]["gold"] == [judge(row["prompt"], r).score for r in row["responses"]]
    for row in _rows(out / "prompts/validation.jsonl"):
        assert row["meta"]["held_out"] is False
    for row in _rows(out / "prompts/eval.jsonl"):
        assert row["meta"]["held_out"] is True
        assert (
            parse_task(row["prompt"]).ideal == row["meta"]["ideal"] or row["meta"]["kind"] == "list"
        )
    multi = [r for r in _rows(out / "prompts/train.jsonl") if isinstance(r["prompt"], list)]
    assert multi and all(
        [m["role"] for m in r["prompt"]] == ["user", "assistant", "user"] for r in multi
    )


def test_unknown_size_is_an_error(tmp_path):
    with pytest.raises(TypeError, match="n_sfts"):
        make_world(tmp_path, n_sfts=3)
    with pytest.raises(ValueError, match="family_weights"):
        make_world(tmp_path, family_weights={"poetry": 1.0})


def test_family_weights(tmp_path):
    tiny = {k: 20 for k in SMALL if k.startswith("n_")} | {"vocab_size": 0}
    manifest = make_world(
        tmp_path, seed=0, family_weights={"arithmetic": 0.0, "harmful": 10.0}, **tiny
    )
    families = manifest["families"]["sft/train"]
    assert "arithmetic" not in families
    assert families["harmful"] > 10  # weight 10 of 10.71 in all: ~93 % of 20 rows


def test_cli_make_and_score(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "make",
            "--out",
            str(tmp_path / "w"),
            "--seed",
            "3",
            "--n-sft",
            "30",
            "--n-pref",
            "40",
            "--vocab-size",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "agreement" in result.output
    rows = _rows(tmp_path / "w/sft/validation.jsonl")[:20]
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "reply": r["response"]}) + "\n" for r in rows)
    )
    result = runner.invoke(app, ["score", "-i", str(replies), "-o", str(tmp_path / "scored.jsonl")])
    assert result.exit_code == 0, result.output
    scored = _rows(tmp_path / "scored.jsonl")
    assert [s["gold"] for s in scored] == [r["meta"]["gold"] for r in rows]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "What is 2 plus 3?", "reply": "5"}\n{"prompt": "Hi!", "reply": "x"}\n'
    )
    result = runner.invoke(app, ["score", "-i", str(bad), "-o", str(tmp_path / "never.jsonl")])
    assert result.exit_code == 2
    assert f"{bad}:2: field 'prompt'" in result.output
    assert not (tmp_path / "never.jsonl").exists()
    bad.write_text('{"prompt": "What is 2 plus 3?"}\n')
    result = runner.invoke(app, ["score", "-i", str(bad)])
    assert result.exit_code == 2 and f"{bad}:1: field 'reply'" in result.output
