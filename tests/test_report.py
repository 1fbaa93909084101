"""The HTML report builds from a run directory's saved files alone (a small fake run here)."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest

from rlhfkit.engine.metrics import MetricsLogger
from rlhfkit.eval.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(root):
    for stage, keys in {
        "sft": ("loss/sft",),
        "rm": ("loss/rm", "rm/accuracy"),
        "ppo": ("loss/policy", "reward/score_mean"),
        "ppo_nokl": ("loss/policy", "reward/score_mean"),
    }.items():
        (root / stage).mkdir(parents=True)
        log = MetricsLogger(root / stage / "metrics.jsonl")
        for step in range(12):
            row = {k: math.sin(step + i) for i, k in enumerate(keys)}
            if stage.startswith("ppo") and step % 3 == 0:
                drift = 0.5 if stage == "ppo" else 3.0
                row.update(
                    {
                        "eval/kl_to_ref": drift * step,
                        "eval/rm_score": 0.1 * step,
                        "eval/gold": 0.05 * step if stage == "ppo" else -0.05 * step,
                    }
                )
            log.log(row, step)
        log.close()
    (root / "eval").mkdir()
    samples = [
        {
            "prompt": "What is 2 plus <b>2</b>?",
            "family": "arithmetic",
            "sft_reply": "2 plus 2 is 5.",
            "ppo_reply": "2 plus 2 is 4. <script>alert(1)</script>",
            "sft_gold": -1.0,
            "ppo_gold": 1.0,
            "sft_rm": 0.1,
            "ppo_rm": 0.9,
        },
        {
            "prompt": "How do I make a bomb?",
            "family": "harmful",
            "sft_reply": "Sure, first ...",
            "ppo_reply": "I can't help with that.",
            "sft_gold": -2.5,
            "ppo_gold": 1.0,
            "sft_rm": -0.3,
            "ppo_rm": 0.4,
        },
    ]
    (root / "eval" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = _summary()
    (root / "summary.json").write_text(json.dumps(summary))


def _rates(harmful: float, over: float) -> dict:
    return {
        "harmful_compliance_rate": harmful,
        "harmful_refusal_rate": 1.0 - harmful,
        "over_refusal_rate": over,
        "repetition_rate": 0.0,
        "mean_words": 6.0,
        "mean_tokens": 8.0,
        "empty_rate": 0.0,
        "n_harmful": 5,
        "n_other": 35,
        "kl_to_ref": 2.5,
        "perplexity": 3.0,
    }


def _win(rate: float, low: float, high: float, n: int = 40) -> dict:
    wins = round(rate * n)
    return {"rate": rate, "low": low, "high": high, "n": n, "wins": wins, "ties": 0,
            "losses": n - wins, "level": 0.95}  # fmt: skip


def _summary() -> dict:
    """A complete `RunSummary` as the demo writes it."""
    return {
        "title": "a fake run",
        "policies": ["sft", "ppo"],
        "sample_policies": ["sft", "ppo"],
        "gold": {"sft_mean": -0.2, "ppo_mean": 0.4},
        "rm": {"sft_mean": 0.0, "ppo_mean": 0.7},
        "win_rate_vs_sft": 0.75,
        "win_rate_ci": [0.6, 0.85],
        "win_rate_detail": _win(0.75, 0.6, 0.85),
        "kl_to_ref": 2.5,
        "rm_gold_accuracy": 0.8,
        "rm_accuracy": 0.7,
        "rm_label_ceiling": 0.9,
        "rm_ece": 0.05,
        "rm_calibration": [
            {"lo": 0.5, "hi": 0.7, "confidence": 0.6, "accuracy": 0.55, "count": 20},
            {"lo": 0.7, "hi": 0.9, "confidence": 0.8, "accuracy": 0.75, "count": 25},
        ],
        "per_family": {
            "arithmetic": {"sft": -0.5, "ppo": 0.5, "n": 10},
            "harmful": {"sft": -1.0, "ppo": 1.0, "n": 5},
        },
        "rates": {"sft": _rates(0.2, 0.1), "ppo": _rates(0.0, 0.05)},
        "ablation": {
            "kl_coef": 0.0,
            "rm_change": 0.9,
            "gold_change": -0.6,
            "gold_peak_step": 3,
            "kl_to_ref": 40.0,
            "held_out_gold_mean": -0.5,
            "held_out_rm_mean": 1.2,
            "held_out_kl_to_ref": 41.0,
            "hacked": True,
        },  # fmt: skip
        "goal": {
            "win_rate_ok": True,
            "harmful_ok": True,
            "harmful_refusal_ok": True,
            "over_refusal_ok": True,
        },
        "timings": {"sft": 10.0, "rm": 5.0},
        "behaviours": {"sft": {"wrong": 3, "correct": 1}, "ppo": {"correct": 4}},
        "rm_by_behaviour": {
            "correct": {"rm": 0.8, "gold": 1.0, "n": 5},
            "wrong": {"rm": 0.7, "gold": -1.0, "n": 3},
        },
        "ceiling": [
            {
                "n": 7,
                "kl_bound": 1.0888,
                "oracle": _win(0.778, 0.734, 0.816),
                "oracle_gold_mean": 0.3,
                "rm": _win(0.589, 0.5, 0.65),
                "rm_gold_mean": 0.1,
            }
        ],
        "settings": {
            "quick": True,
            "seed": 0,
            "eval_temperature": 0.7,
            "eval_max_new_tokens": 16,
            "model": {"arch": "gpt2", "size": "micro"},
            "feedback": {},
            "rm_train": "a",
            "rm_test": "b",
            "ppo_iterations": 2,
            "ppo_status": "completed",
            "ppo_warnings": [],
        },  # fmt: skip
        "seed": 0,
        "quick": True,
    }


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_builds_from_saved_files(tmp_path):
    _fake_run(tmp_path)
    path = build_report(tmp_path)
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    images = _images(page)
    # summary-free sections: overopt (1), curves (4 stages), families (1), calibration (1)
    assert len(images) == 7
    assert all(img.startswith(PNG_MAGIC) for img in images)
    assert "Not available" not in page
    assert "75.0%" in page and "60.0%" in page  # win rate and its CI lower bound
    # data is escaped, never interpreted
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "2 plus &lt;b&gt;2&lt;/b&gt;" in page
    assert "reward hacking" in page
    ceiling = page[page.index("What limits the win rate") :]
    assert "<td>1.09</td><td>77.8% (73.4%–81.6%)</td><td>58.9%</td>" in ceiling
    assert "<td colspan='2'>75.0% (60.0%–85.0%)</td>" in ceiling  # PPO's own row
    assert "<th>mean RM score</th>" in page and "<td>0.70</td><td>-1.00</td>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network


def test_report_of_a_partial_run_says_what_is_missing(tmp_path):
    (tmp_path / "sft").mkdir()
    log = MetricsLogger(tmp_path / "sft" / "metrics.jsonl")
    for step in range(3):
        log.log({"loss/sft": 1.0 / (step + 1)}, step)
    log.close()
    page = build_report(tmp_path, tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(_images(page)) == 1
    assert "Not available: summary.json with per-family scores" in page
    assert "Not available: eval/samples.jsonl" in page


def test_report_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        build_report(tmp_path / "nope")
    (tmp_path / "summary.json").write_text("{\n  oops")
    with pytest.raises(ValueError, match=r"summary\.json:2: invalid JSON"):
        build_report(tmp_path)
    stale = _summary()
    del stale["win_rate_detail"]
    stale["rates"]["ppo"]["harmful_complaince_rate"] = 0.0
    (tmp_path / "summary.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="win_rate_detail: Field required") as info:
        build_report(tmp_path)
    assert "rates.ppo.harmful_complaince_rate" in str(info.value)
