"""`rlhfkit demo --quick` end to end: the CI smoke test of the whole loop (toy sizes)."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from rlhfkit.demo import run_demo


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_demo_quick_end_to_end(tmp_path):
    t0 = time.perf_counter()
    summary = run_demo(tmp_path / "demo", seed=0, quick=True)
    elapsed = time.perf_counter() - t0
    out = tmp_path / "demo"
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(summary))  # what is returned is what is saved
    for key in ("sft_mean", "ppo_mean"):
        assert isinstance(on_disk["gold"][key], float)
        assert isinstance(on_disk["rm"][key], float)
    for key in ("win_rate_vs_sft", "kl_to_ref", "rm_gold_accuracy"):
        assert isinstance(on_disk[key], float), key
    assert 0.0 <= on_disk["win_rate_vs_sft"] <= 1.0
    lo, hi = on_disk["win_rate_ci"]
    assert lo <= on_disk["win_rate_vs_sft"] <= hi
    assert on_disk["per_family"] and all(
        {"sft", "ppo"} <= set(v) for v in on_disk["per_family"].values()
    )
    assert set(on_disk["timings"]) >= {
        "world", "sft", "feedback", "redteam", "rm", "ppo", "ppo_nokl", "eval", "report"
    }  # fmt: skip
    # the RM trained on the annotators' comparisons of SFT samples (+ the world's pairs here)
    feedback = [json.loads(x) for x in (out / "feedback" / "train.jsonl").read_text().splitlines()]
    assert feedback and all(r["meta"]["source"] == "policy" for r in feedback)
    assert all(len(r["responses"]) >= 2 for r in feedback)  # k = 3: rankings
    assert "ranked: true" in (out / "configs" / "rm.yaml").read_text(encoding="utf-8")
    rm_cfg = (out / "configs" / "rm.yaml").read_text(encoding="utf-8")
    assert "rm_data/train.jsonl" in rm_cfg and "rm_data/test.jsonl" in rm_cfg
    world_pairs = (out / "world" / "preferences" / "train.jsonl").read_text().splitlines()
    red = [json.loads(x) for x in (out / "redteam" / "train.jsonl").read_text().splitlines()]
    assert red and all(r["meta"]["source"] == "red_team" for r in red)
    assert all(r["meta"]["family"] == "harmful" for r in red)
    assert len((out / "rm_data" / "train.jsonl").read_text().splitlines()) == len(
        world_pairs
    ) + len(feedback) + len(red)
    # harm rates pooled over the 24 prompts' harmful ones and the 16 extra, with intervals
    harm = on_disk["harm"]["sft"]["harmful_compliance"]
    n_harmful = sum(r["family"] == "harmful" for r in _rows(out / "eval" / "samples.jsonl"))
    assert harm["n"] == n_harmful + 16 and harm["low"] <= harm["rate"] <= harm["high"]
    assert on_disk["rm_gold_agreement_by"] and on_disk["redteam"]["train"]["rows"] == len(red)
    assert on_disk["rm_calibration"]
    # best-of-n ceilings (settings: n 2 and 4); the oracle never does worse than RM selection
    assert [r["n"] for r in on_disk["ceiling"]] == [2, 4]
    assert all(r["oracle"]["rate"] >= r["rm"]["rate"] for r in on_disk["ceiling"])
    # the per-family means are the means of the saved per-prompt gold scores
    rows = [json.loads(line) for line in (out / "eval" / "samples.jsonl").read_text().splitlines()]
    arith = [r["ppo_gold"] for r in rows if r["family"] == rows[0]["family"]]
    assert on_disk["per_family"][rows[0]["family"]]["ppo"] == pytest.approx(sum(arith) / len(arith))

    page = (out / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 6  # families, over-optimisation, 4 training stages, calibration
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    assert "Not available" not in page
    assert "one-off figure" in page  # counts and single evaluations are table rows
    print(
        f"demo --quick took {elapsed:.0f}s"
    )  # timing is machine-dependent: reported, not asserted
