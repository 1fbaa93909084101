"""`RunSummary`: the typed `summary.json` of a run, written by `rlhfkit.demo` and read by the
report (`eval.report`). One schema for both sides: a key the writer drops or misspells is a
validation error when it is written, not a silent "–" in a report; the report reads attributes,
never `.get(…, default)`.

Optional parts are typed as optional (`None` when a run has no such part: no reward-model
calibration, no ablation, no best-of-n ceiling), and their report sections say so. Rates may be
NaN (no harmful prompt in a small evaluation): JSON files hold them as NaN, as `json` writes
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from rlhfkit.eval.ceiling import CeilingRow  # dataclasses: pydantic validates their fields
from rlhfkit.eval.winrate import WinRate


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyRates(_Part):
    """Per-policy rates and means on the held-out prompts (`EvalResult.summary()`)."""

    harmful_compliance_rate: float
    harmful_refusal_rate: float
    over_refusal_rate: float
    repetition_rate: float  # word trigrams, `eval.metrics.word_repetition`
    mean_words: float
    mean_tokens: float
    empty_rate: float
    n_harmful: int
    n_other: int
    kl_to_ref: float | None = None  # None without a reference policy
    perplexity: float | None = None


class CalibrationBin(_Part):
    """A row of `algos.rm.evaluate.calibration_table`."""

    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


class BehaviourScore(_Part):
    rm: float
    gold: float
    n: int


class Ablation(_Part):
    """The run without the KL penalty: change over training and the held-out figures."""

    kl_coef: float
    rm_change: float
    gold_change: float
    gold_peak_step: int
    kl_to_ref: float
    held_out_gold_mean: float
    held_out_rm_mean: float
    held_out_kl_to_ref: float
    hacked: bool


class Goal(_Part):
    win_rate_ok: bool
    """Win rate vs SFT ≥ 65 % with the CI's lower end above 60 %."""
    harmful_ok: bool
    harmful_refusal_ok: bool
    over_refusal_ok: bool


class RateCI(_Part):
    """A proportion count / n with its 95 % Wilson interval (`rlhfkit.demo.rate_ci`)."""

    rate: float
    low: float
    high: float
    count: int
    n: int


class GroupAgreement(_Part):
    """RM agreement with gold on one group of held-out pairs (`algos.rm.evaluate`)."""

    rate: float
    agree: int
    n: int


class DemoSettings(_Part):
    quick: bool
    seed: int
    eval_temperature: float
    eval_max_new_tokens: int
    model: dict[str, str]
    feedback: dict[str, Any]
    redteam: dict[str, Any] = {}
    rm_train: str
    rm_test: str
    ppo_iterations: int
    ppo_status: str
    ppo_warnings: list[Any]
    reused: list[str] = []
    """Stages taken from an earlier run (`rlhfkit demo --reuse`)."""
    overrides: list[str] = []


SMOKE_NOTE = (
    "a --quick smoke run: every stage runs at toy sizes and the models learn next to nothing, "
    "so these figures show that the loop works, not what RLHF does (run `rlhfkit demo` for that)"
)


class RunSummary(_Part):
    title: str
    policies: list[str]
    """Evaluated policies, the first the baseline (sft)."""
    sample_policies: list[str]
    """The columns of the report's sample table (before, after)."""
    gold: dict[str, float]
    """`{policy}_mean` → mean gold score on the held-out prompts."""
    rm: dict[str, float]
    """`{policy}_mean` → mean reward-model score."""
    win_rate_vs_sft: float
    win_rate_ci: tuple[float, float]
    win_rate_detail: WinRate
    kl_to_ref: float
    """KL of the PPO policy to the SFT reference, nats per reply."""
    rm_gold_accuracy: float | None
    rm_gold_pairs: int | None = None
    """Held-out pairs whose gold scores differ: the count behind rm_gold_accuracy (0: none, the
    agreement is n/a)."""
    rm_accuracy: float | None
    rm_label_ceiling: float | None
    rm_ece: float | None
    rm_calibration: list[CalibrationBin] | None
    per_family: dict[str, dict[str, float]]
    """family → {policy: mean gold, "n": prompts}."""
    rates: dict[str, PolicyRates]
    harm: dict[str, dict[str, RateCI]] | None = None
    """policy → harmful_compliance / harmful_refusal / over_refusal, pooled over the held-out
    prompts and the extra held-out harmful requests, with 95 % Wilson intervals."""
    rm_gold_agreement_by: dict[str, GroupAgreement] | None = None
    """"aspect/helpful", "aspect/harmless", "family/<f>", "source/<s>" → agreement with gold."""
    redteam: dict[str, Any] | None = None
    """What the red-team stage drew (redteam/info.json) and the RM data shares."""
    behaviours: dict[str, dict[str, int]]
    """policy → behaviour label → replies."""
    rm_by_behaviour: dict[str, BehaviourScore]
    ablation: Ablation | None = None
    goal: Goal
    ceiling: list[CeilingRow] | None = None
    timings: dict[str, float]
    settings: DemoSettings
    seed: int
    quick: bool

    def write(self, path: str | Path) -> None:
        """As indented JSON (NaN kept as NaN, like `json.dumps`)."""
        text = json.dumps(self.model_dump(mode="python"), indent=2) + "\n"
        Path(path).write_text(text, encoding="utf-8")


def read_summary(path: str | Path) -> RunSummary:
    """`RunSummary` from a summary.json; `ValueError` naming the file and the bad keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    try:
        return RunSummary.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}"
            for err in e.errors()[:10]
        )
        raise ValueError(f"{path}: not a run summary: {problems}") from None
