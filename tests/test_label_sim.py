"""`rlhfkit sim collect --server`: the simulated annotators label through a running label app,
and the exported pairs equal the offline `sim collect` file of the same seed, row for row."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import pytest
from label_helpers import PASSWORDS, live_server
from transformers import AutoTokenizer
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data import read_preferences
from rlhfkit.label import service
from rlhfkit.label.db import Database
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim import make_world

SMALL = dict(
    n_sft=20, n_sft_val=5, n_pref=20, n_pref_val=5, n_pref_test=5, n_ranked=3, n_ranked_test=3,
    n_prompts=60, n_eval_prompts=5, vocab_size=400,
)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_world(root, seed=3, **SMALL)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    policy = save_tiny_model(
        build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1), root / "policy", tok
    )
    return root, policy


@contextmanager
def _server(tmp_path):
    """A live label app on a fresh SQLite file with one admin: (url, API token, database)."""
    database = Database(f"sqlite:///{tmp_path / 'label.db'}")
    database.upgrade()
    with database.session() as db:
        _, token = service.create_user(db, "admin", PASSWORDS["admin"], "admin")
    with live_server(database) as url:
        yield url, token, database


def _collect(world, policy, out, *extra):
    args = ["sim", "collect", "--world", str(world), "--policy", str(policy), "-o", str(out),
            "--seed", "4", "--max-new-tokens", "8", *extra]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_collect_through_the_server_equals_offline(world, tmp_path):
    root, policy = world
    offline = _collect(root, policy, tmp_path / "offline.jsonl")
    with _server(tmp_path) as (url, token, database):
        served = _collect(
            root, policy, tmp_path / "served.jsonl", "--server", url, "--token", token
        )
    assert len(offline) > 20
    key = lambda r: (json.dumps(r["prompt"]), r["chosen"], r["rejected"])  # noqa: E731
    assert [key(r) for r in served] == [key(r) for r in offline]
    for a, b in zip(served, offline, strict=True):
        for field in ("chosen_gold", "rejected_gold", "chosen_behaviour", "rejected_behaviour"):
            assert a["meta"][field] == b["meta"][field]
        assert a["meta"]["annotator"] == b["meta"]["annotator"]  # the same annotator's account
        assert a["margin"] in (1, 2, 3)
    assert len(read_preferences(tmp_path / "served.jsonl").records) == len(offline)
    with database.session() as db:
        stats = service.stats(db, service.get_project(db, "sim-collect-4"))
    assert stats["judgments"] == len(offline) and stats["tasks_open"] == 0
    database.close()


def test_collect_through_the_server_needs_a_token(world, tmp_path, monkeypatch):
    monkeypatch.delenv("RLHFKIT_LABEL_TOKEN", raising=False)
    root, policy = world
    args = ["sim", "collect", "--world", str(root), "--policy", str(policy), "-o", str(tmp_path / "x"),
            "--server", "http://127.0.0.1:9"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "admin token" in result.output
    result = CliRunner().invoke(app, [*args, "--token", "x", "-n", "3", "--max-new-tokens", "4"])
    assert result.exit_code == 2 and "cannot reach the label server" in result.output


def test_thumbs_are_the_logistic_of_the_gold_score():
    """rate(..., u) is up exactly when u > 1 − σ(u(y)/T), so P(up) = σ(u(y)/T) for u ~ U(0, 1)."""
    from rlhfkit.sim.annotators import Annotator
    from rlhfkit.sim.ratings import rate

    for temperature, bias, gold, reply in [(0.5, 0.0, 1.0, "yes"), (2.0, 0.1, -1.0, "a b c d"),
                                           (1.0, 0.0, 0.0, "x"), (0.3, -0.2, 0.4, "one two")]:  # fmt: skip
        annotator = Annotator(temperature, bias)
        utility = gold + bias * len(reply.split())
        p_up = 1 / (1 + math.exp(-utility / temperature))
        for u in [i / 200 for i in range(1, 200)]:
            expected = "up" if u > 1 - p_up else "down"
            if abs(u - (1 - p_up)) > 1e-9:
                assert rate(annotator, gold, reply, "thumbs", u) == expected, (temperature, u)


def test_likert_scores_follow_the_cut_points():
    from rlhfkit.sim.annotators import Annotator
    from rlhfkit.sim.ratings import rate

    cuts = {"1-5": [-1.25, -1.25 + 2 / 3, -1.25 + 4 / 3, 0.75],
            "1-7": [-1.25, -0.85, -0.45, -0.05, 0.35, 0.75]}  # fmt: skip
    annotator = Annotator(temperature=0.7)
    for scale, points in cuts.items():
        for gold in [-2.5, -1.0, -0.3, 0.0, 0.5, 1.0]:
            for u in [0.01, 0.2, 0.5, 0.8, 0.99]:
                latent = gold + 0.7 * math.log(u / (1 - u))
                assert rate(annotator, gold, "r", scale, u) == 1 + sum(c < latent for c in points)


def test_rate_through_the_server_equals_offline(world, tmp_path):
    root, policy = world
    rating = [
        "--kind",
        "rating",
        "-k",
        "2",
        "--scale",
        "1-5",
        "--aspects",
        "helpful,harmless:thumbs",
    ]
    offline = _collect(root, policy, tmp_path / "offline.jsonl", *rating)
    with _server(tmp_path) as (url, token, database):
        served = _collect(
            root, policy, tmp_path / "served.jsonl", *rating, "--server", url, "--token", token
        )
    assert len(offline) > 20 and served == offline  # every field, row for row
    assert all(set(r) == {"prompt", "completion", "label", "meta"} for r in served)
    assert {r["label"] for r in served} == {True, False}
    assert all(r["meta"]["scores"]["harmless"] in ("up", "down") for r in served)
    assert all(r["label"] == (r["meta"]["scores"]["helpful"] > 3) for r in served)
    with database.session() as db:
        stats = service.stats(db, service.get_project(db, "sim-rate-4"))
    assert stats["tasks_open"] == 0 and stats["judgments"] >= len(offline)  # + the middle 3s
    assert stats["aspects"]["helpful"]["alpha_metric"] == "ordinal"
    database.close()
