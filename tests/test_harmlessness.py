"""Harmlessness feedback and its measurement (issue 33): red-team collection
(`sim.feedback.collect_red_team`), the RM's agreement with gold by aspect
(`algos.rm.evaluate.agreement_by_group`), harm rates with Wilson intervals (`demo.rate_ci`,
`demo.harm_rates`), the extra held-out harmful prompts (`make_world(n_eval_harmful=...)`), the RM
data shares (`demo._rm_files`) and the report's one-off figures (`eval.report._split_keys`)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit.algos.rm.evaluate import agreement_by_group, groups_of, pair_metrics
from rlhfkit.data import read_prompts
from rlhfkit.demo import FeedbackSettings, RedTeamSettings, _rm_files, harm_rates, rate_ci
from rlhfkit.eval.report import _split_keys
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.rollout import RolloutConfig
from rlhfkit.sim import Annotator, judge, make_world
from rlhfkit.sim.feedback import collect_red_team, comparison_count, harmful_prompts
from rlhfkit.types import PreferencePair

SMALL = dict(
    n_sft=20, n_sft_val=5, n_pref=20, n_pref_val=5, n_pref_test=5, n_ranked=3, n_ranked_test=3,
    n_prompts=80, n_eval_prompts=5, vocab_size=400,
)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_world(root, seed=5, n_eval_harmful=12, **SMALL)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    prompts = read_prompts(root / "prompts" / "train.jsonl").records
    policy = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1)
    return root, tok, prompts, policy


# -- the world's extra held-out harmful prompts ------------------------------------------------


def test_eval_harmful_prompts_are_held_out_harmful_and_change_no_other_file(world, tmp_path):
    root, *_ = world
    rows = [
        json.loads(x) for x in (root / "prompts" / "eval_harmful.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 12
    assert all(r["meta"]["family"] == "harmful" and r["meta"]["held_out"] for r in rows)
    assert all(judge(r["prompt"], "x").family == "harmful" for r in rows)
    # the same world without them: every other file byte-identical (tokenizer included)
    make_world(tmp_path, seed=5, **SMALL)
    assert not (tmp_path / "prompts" / "eval_harmful.jsonl").exists()
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            assert path.read_bytes() == (root / path.relative_to(tmp_path)).read_bytes(), path


# -- red-team collection -----------------------------------------------------------------------


def test_red_team_asks_only_harmful_requests_and_is_reproducible(world):
    _, tok, prompts, policy = world
    harmful = harmful_prompts(prompts)
    by_meta = [r for r in prompts if r.meta["family"] == "harmful"]
    assert harmful == by_meta and 0 < len(harmful) < len(prompts)
    cfg = RolloutConfig(max_new_tokens=8, temperature=1.5, batch_size=16)
    ann = [Annotator(temperature=0.3, length_bias=0.0, name="a")]
    rows = collect_red_team(policy, tok, prompts, ann, cfg, seed=3, k=4)
    assert 0 < len(rows) <= len(harmful)
    for row in rows:
        assert row["meta"]["source"] == "red_team" and row["meta"]["aspect"] == "harmless"
        assert row["meta"]["family"] == "harmful"
        assert 2 <= len(row["responses"]) <= 4 and len(set(row["responses"])) == len(
            row["responses"]
        )
        assert row["meta"]["gold"] == [judge(row["prompt"], r).score for r in row["responses"]]
    assert collect_red_team(policy, tok, prompts, ann, cfg, seed=3, k=4) == rows
    assert collect_red_team(policy, tok, prompts, ann, cfg, seed=4, k=4) != rows
    pairs = collect_red_team(policy, tok, prompts, ann, cfg, seed=3, k=2)
    assert pairs and all({"chosen", "rejected"} <= set(r) for r in pairs)
    # no harmful request among the prompts: nothing to red-team
    assert collect_red_team(policy, tok, [p for p in prompts if p not in harmful], ann, cfg) == []


def test_comparison_count_counts_pairs_in_rankings():
    rows = [
        {"responses": list("abcd")},
        {"responses": list("ab")},
        {"chosen": "a", "rejected": "b"},
    ]
    assert comparison_count(rows) == 6 + 1 + 1


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rm_data_joins_red_team_rows_and_records_their_share(tmp_path):
    ranked = {"prompt": "p", "responses": ["a", "b", "c"], "meta": {"source": "policy"}}
    red = {"prompt": "h", "responses": list("abcd"), "meta": {"source": "red_team"}}
    pair = {
        "prompt": "q",
        "chosen": "a",
        "rejected": "b",
        "meta": {"chosen_gold": 1.0, "rejected_gold": 0.0},
    }
    _write(tmp_path / "feedback" / "train.jsonl", [ranked] * 5)  # 15 comparisons
    _write(tmp_path / "feedback" / "test.jsonl", [pair] * 3)
    _write(tmp_path / "redteam" / "train.jsonl", [red] * 2)  # 12 comparisons
    _write(tmp_path / "redteam" / "test.jsonl", [pair] * 4)
    fb = FeedbackSettings(n_prompts=5, n_test_prompts=3, k=3)
    rt = RedTeamSettings(n_prompts=10, n_test_prompts=4, k=4)
    train, test = _rm_files(
        tmp_path, fb, rt, tmp_path / "feedback" / "train.jsonl",
        tmp_path / "feedback" / "test.jsonl", tmp_path / "world",
    )  # fmt: skip
    assert len(train.read_text().splitlines()) == 7 and len(test.read_text().splitlines()) == 7
    shares = json.loads((tmp_path / "rm_data" / "shares.json").read_text())
    assert shares["train"]["redteam/train.jsonl"] == {"comparisons": 12, "share": 12 / 27}
    assert shares["train"]["feedback/train.jsonl"]["share"] == 15 / 27
    assert shares["test"]["redteam/test.jsonl"]["share"] == 4 / 7
    # the "before" RM: red-team pairs evaluated, not trained on
    before = RedTeamSettings(n_prompts=10, n_test_prompts=4, k=4, train=False)
    train, test = _rm_files(
        tmp_path, fb, before, tmp_path / "feedback" / "train.jsonl",
        tmp_path / "feedback" / "test.jsonl", tmp_path / "world",
    )  # fmt: skip
    assert len(train.read_text().splitlines()) == 5 and len(test.read_text().splitlines()) == 7


# -- RM agreement with gold by aspect ----------------------------------------------------------


def test_agreement_by_group_matches_a_hand_count():
    # pair: RM gap, gold gap, groups
    table = [
        (+1.0, +2.0, ["aspect/helpful", "family/fact"]),  # agree
        (-0.5, +1.0, ["aspect/helpful", "family/fact"]),  # disagree
        (+0.2, -1.0, ["aspect/helpful", "family/arithmetic"]),  # disagree
        (+0.3, 0.0, ["aspect/helpful", "family/arithmetic"]),  # gold tie: not counted
        (-1.0, -0.5, ["aspect/harmless", "family/harmful"]),  # agree
        (+2.0, +0.1, ["aspect/harmless", "family/harmful"]),  # agree
        (0.0, +1.0, ["aspect/harmless", "family/harmful"]),  # RM tie reads "rejected": disagree
        (+1.0, math.nan, ["aspect/harmless", "family/harmful"]),  # no gold: not counted
    ]
    gaps = torch.tensor([t[0] for t in table])
    gold = torch.tensor([t[1] for t in table], dtype=torch.float64)
    by = agreement_by_group(gaps, gold, [t[2] for t in table])
    assert by == {
        "aspect/harmless": {"rate": 2 / 3, "agree": 2, "n": 3},
        "aspect/helpful": {"rate": 1 / 3, "agree": 1, "n": 3},
        "family/arithmetic": {"rate": 0.0, "agree": 0, "n": 1},
        "family/fact": {"rate": 0.5, "agree": 1, "n": 2},
        "family/harmful": {"rate": 2 / 3, "agree": 2, "n": 3},
    }
    # through pair_metrics: the pooled figure is the count over both aspects
    m = pair_metrics(gaps, torch.zeros(8), gold, groups=[t[2] for t in table])
    assert m["eval/gold_agreement"] == 3 / 6
    assert m["eval/gold_agreement_harmless"] == 2 / 3 and m["eval/gold_agreement_helpful"] == 1 / 3
    with pytest.raises(ValueError, match="same length"):
        agreement_by_group(gaps, gold, [["a"]])


def test_groups_of_reads_aspect_family_and_source():
    pairs = [
        PreferencePair("p", "a", "b", meta={"family": "harmful", "source": "policy"}),
        PreferencePair("p", "a", "b", meta={"family": "fact", "aspect": "helpful"}),
        PreferencePair(
            "p", "a", "b", meta={"family": "harmful", "aspect": "harmless", "source": "red_team"}
        ),
    ]
    assert groups_of(pairs) == [
        ["aspect/harmless", "family/harmful", "source/policy"],
        ["aspect/helpful", "family/fact"],
        ["aspect/harmless", "family/harmful", "source/red_team"],
    ]
    assert groups_of([PreferencePair("p", "a", "b")]) is None


# -- harm rates with confidence intervals ------------------------------------------------------


def test_rate_ci_is_the_wilson_interval_in_closed_form():
    # 3 of 56 at 95 %: z = 1.959964; closed form of Wilson (1927) written out here
    z, n, p = 1.959963984540054, 56, 3 / 56
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = rate_ci(3, 56)
    assert r["rate"] == p and (r["count"], r["n"]) == (3, 56)
    assert r["low"] == pytest.approx(centre - half, abs=1e-12)
    assert r["high"] == pytest.approx(centre + half, abs=1e-12)
    zero = rate_ci(0, 250)  # 0 of n: [0, z²/(n + z²)]
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(z * z / (250 + z * z), abs=1e-12)
    empty = rate_ci(0, 0)
    assert math.isnan(empty["rate"]) and (empty["low"], empty["high"]) == (0.0, 1.0)


def test_harm_rates_pool_both_evaluations_by_hand_count():
    a = SimpleNamespace(
        families=["harmful", "harmful", "fact", "fact", "harmful"],
        behaviours=["refusal", "harmful_compliance", "over_refusal", "correct", "rude"],
    )
    b = SimpleNamespace(
        families=["harmful"] * 3, behaviours=["over_refusal", "refusal", "harmful_compliance"]
    )
    r = harm_rates([a, b])
    assert (r["harmful_compliance"]["count"], r["harmful_compliance"]["n"]) == (2, 6)
    assert (r["harmful_refusal"]["count"], r["harmful_refusal"]["n"]) == (3, 6)
    assert (r["over_refusal"]["count"], r["over_refusal"]["n"]) == (1, 2)
    assert r["over_refusal"]["rate"] == 0.5


# -- the report: one-off figures are table rows, not one-point plots ---------------------------


def test_split_keys_draws_only_keys_that_change():
    rows = [
        {"step": 10, "loss/sft": 2.0, "nan/skipped_steps": 0, "time": 1.0},
        {"step": 20, "loss/sft": 1.5, "nan/skipped_steps": 0, "eval/pairs": 400},
        {"step": 30, "loss/sft": 1.2, "nan/skipped_steps": 0, "eval/loss": 1.9, "eval/pairs": 400},
        {"step": 40, "eval/loss": 1.7, "eval/tokens": 900},
    ]
    curves, once = _split_keys(rows)
    assert curves == ["loss/sft", "eval/loss"]
    assert once == {
        "eval/pairs": (400, "constant over 2 logs"),
        "eval/tokens": (900, "step 40"),
        "nan/skipped_steps": (0, "constant over 3 logs"),
    }


def test_sim_collect_red_team_writes_harmlessness_rankings(world, tmp_path):
    from typer.testing import CliRunner

    from rlhfkit.cli import app
    from rlhfkit.models.tiny import save_tiny_model

    root, tok, _, policy = world
    save_tiny_model(policy, tmp_path / "policy", tok)
    out = tmp_path / "red.jsonl"
    args = ["sim", "collect", "--world", str(root), "--policy", str(tmp_path / "policy")]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "--red-team", "-k", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows and all(r["meta"]["source"] == "red_team" for r in rows)
    assert all(r["meta"]["family"] == "harmful" and len(r["responses"]) >= 2 for r in rows)
    # prompts without a harmful request: one line naming the file, no output written
    none = tmp_path / "none.jsonl"
    none.write_text('{"prompt": "What is 2 + 3?"}\n')
    bad = CliRunner().invoke(
        app, [*args, "-o", str(tmp_path / "x.jsonl"), "--red-team", "--prompts", str(none)]
    )
    assert bad.exit_code == 2 and "holds no harmful request" in bad.output
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stop-after", "bogus"], "--stop-after: unknown stage 'bogus'"),
        (["--reuse", "sft"], "holds no earlier demo run"),
        (["eval.n_harmful=999"], "eval.n_harmful: 999 held-out harmful requests asked"),
        (["redteam.k=1"], "redteam.k"),
    ],
)
def test_demo_bad_options_are_one_line_before_any_run_directory(tmp_path, args, message):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
