"""`rlhfkit sim collect --server`: the simulated annotators label through a running label app,
and the exported pairs equal the offline `sim collect` file of the same seed, row for row."""

from __future__ import annotations

import json

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


def _collect(world, policy, out, *extra):
    args = ["sim", "collect", "--world", str(world), "--policy", str(policy), "-o", str(out),
            "--seed", "4", "--max-new-tokens", "8", *extra]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_collect_through_the_server_equals_offline(world, tmp_path):
    root, policy = world
    offline = _collect(root, policy, tmp_path / "offline.jsonl")
    database = Database(f"sqlite:///{tmp_path / 'label.db'}")
    database.upgrade()
    with database.session() as db:
        _, token = service.create_user(db, "admin", PASSWORDS["admin"], "admin")
    with live_server(database) as url:
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
