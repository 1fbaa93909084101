"""End to end, as a user runs it: the simulated annotators rate replies through the running
label app (`rlhfkit sim collect --kind rating --server`), `rlhfkit label export --format
ratings` writes the unpaired rows, and `rlhfkit kto` trains on that file as it is. Every step is
the CLI entry point; the desirable / undesirable counts the trainer read equal the export's."""

from __future__ import annotations

import json
import math
import re

import pytest
from label_helpers import PASSWORDS, live_server
from transformers import AutoTokenizer
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.label import service
from rlhfkit.label.db import Database
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim import make_world

SMALL = dict(
    n_sft=20, n_sft_val=5, n_pref=20, n_pref_val=5, n_pref_test=5, n_ranked=3, n_ranked_test=3,
    n_prompts=40, n_eval_prompts=5, vocab_size=400,
)  # fmt: skip
KTO_METRICS = ("loss/kto", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins",
               "logps/chosen", "logps/rejected")  # fmt: skip
NAMESPACES = ("loss", "kl", "rewards", "logps", "count")


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("scale", ["thumbs", "1-5"])
def test_ratings_from_the_running_app_train_kto_without_conversion(tmp_path, scale):
    root = tmp_path / "world"
    make_world(root, seed=3, **SMALL)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    policy = save_tiny_model(
        build_tiny_model("gpt2", "nano", tokenizer=tok, seed=1), root / "policy", tok
    )
    db_url = f"sqlite:///{tmp_path / 'label.db'}"
    database = Database(db_url)
    database.upgrade()
    with database.session() as db:
        _, token = service.create_user(db, "admin", PASSWORDS["admin"], "admin")

    # 1. the simulated annotators rate sampled replies through the running app
    with live_server(database) as url:
        _invoke("sim", "collect", "--world", root, "--policy", policy, "-o",
                tmp_path / "collected.jsonl", "--seed", "4", "--max-new-tokens", "8",
                "--kind", "rating", "-k", "2", "--scale", scale, "--server", url,
                "--token", token)  # fmt: skip
    database.close()

    # 2. the label app's export, as a user writes it
    export = tmp_path / "ratings.jsonl"
    _invoke("label", "export", "--project", "sim-rate-4", "--format", "ratings", "-o", export,
            "--db", db_url)  # fmt: skip
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    n_good = sum(r["label"] is True for r in rows)
    n_bad = sum(r["label"] is False for r in rows)
    assert n_good + n_bad == len(rows) > 20 and n_good > 0 and n_bad > 0

    # 3. KTO on that file, no conversion: every row read, every row trained on (one epoch)
    out = tmp_path / "kto"
    output = _invoke("kto", "--preset", "kto_sim", f"model.name_or_path={policy}",
                     f"data.train={export}", f"out_dir={out}", "data.validation_fraction=0",
                     "data.max_length=64", "epochs=1", "log_every=1", "optim.warmup_steps=0",
                     "engine.threads=1")  # fmt: skip
    read = re.search(r"kto: (\d+) training examples \((\d+) desirable", output)
    assert read is not None, output
    assert (int(read.group(1)), int(read.group(2))) == (len(rows), n_good)
    steps = [m for m in read_metrics(out / "metrics.jsonl") if "loss/kto" in m]
    assert len(steps) >= 2
    for m in steps:  # a side with no example in a step has no rewards/logps that step (TRL)
        assert all(math.isfinite(v) for k, v in m.items() if k.split("/")[0] in NAMESPACES), m
        assert "loss/kto" in m and "kl" in m
    assert set(KTO_METRICS) <= {k for m in steps for k in m}
    assert sum(m["count/chosen"] for m in steps) == n_good
    assert sum(m["count/rejected"] for m in steps) == n_bad
    assert (out / "model" / "config.json").is_file()
