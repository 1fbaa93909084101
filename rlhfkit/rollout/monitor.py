"""Watching an online run: rollout statistics and the pattern-collapse warnings (every online
trainer logs `rollout_metrics` and feeds them to a `CollapseMonitor`).

Implementation details and their sources:

1. Pattern collapse (Zheng et al. 2023 §4.1 and Figure 4: the reward keeps rising while the
   policy drifts into a few repeated patterns; perplexity, response length and KL to the
   reference move far from where they started). `CollapseMonitor` takes the mean of the first
   `window` iterations as the baseline and warns when the reward is above its baseline while
   (a) the mean response length changed by more than `length_change` (relative), (b) policy
   perplexity fell below `perplexity_drop` × its baseline, (c) KL to the reference exceeds
   `max_kl` nats, or (d) more than `max_repetition` of responses repeat themselves.
2. A response "repeats itself" when fewer than half of its token trigrams are distinct (the
   distinct-n measure of Li et al. 2016, applied per response): `repetitive_share` over
   `ngram_repetition`, the one definition `rlhfkit.eval.metrics` also uses (on words there).
3. Explained variance 1 − Var(R − V)/Var(R) over valid tokens (OpenAI baselines
   `explained_variance`; CleanRL logs the same).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from rlhfkit.core import masked_var, perplexity, sequence_kl
from rlhfkit.rollout.experience import Experience

__all__ = [
    "CollapseMonitor",
    "ConsoleThrottle",
    "ended_at",
    "explained_variance",
    "ngram_repetition",
    "repetition_fraction",
    "repetitive_share",
    "rollout_metrics",
]


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns) over valid positions (nan when Var(returns)=0)."""
    if int(mask.sum()) < 2:
        return float("nan")
    var_returns = float(masked_var(returns, mask))
    if var_returns == 0.0:
        return float("nan")
    return 1.0 - float(masked_var(returns - values, mask)) / var_returns


def ngram_repetition(items: Sequence[Hashable], n: int = 3) -> float:
    """Fraction of the n-grams of `items` that repeat an earlier n-gram: 1 − distinct/total.

    `items` are words or token ids. [a, b, c, a, b, c] with n = 3 has 4 trigrams, 3 distinct →
    0.25. 0.0 when there are fewer than n items.
    """
    if n < 1:
        raise ValueError(f"ngram_repetition: n must be >= 1, got {n}")
    items = list(items)
    grams = [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def repetitive_share(
    sequences: Sequence[Sequence[Hashable]], n: int = 3, threshold: float = 0.5
) -> float:
    """Share of the sequences longer than n items whose `ngram_repetition` exceeds
    `threshold` (fewer than half of their n-grams distinct by default); 0.0 when none is long
    enough to count."""
    counted = [s for s in sequences if len(s) > n]
    if not counted:
        return 0.0
    return sum(ngram_repetition(s, n) > threshold for s in counted) / len(counted)


def repetition_fraction(response_ids: torch.Tensor, response_mask: torch.Tensor) -> float:
    """`repetitive_share` of the replies' valid token ids: the share of replies (more than 3
    tokens) fewer than half of whose token trigrams are distinct."""
    rows = [
        [t for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(response_ids.tolist(), response_mask.tolist(), strict=True)
    ]
    return repetitive_share(rows)


@dataclass
class CollapseMonitor:
    window: int = 5
    length_change: float = 0.5
    perplexity_drop: float = 0.5
    max_kl: float = 20.0
    max_repetition: float = 0.5
    history: list[dict[str, float]] = field(default_factory=list)

    def check(self, metrics: dict[str, float]) -> list[str]:
        """Record one iteration's metrics; return the warnings it triggers (empty if none)."""
        return [message for _, message in self.check_kinds(metrics)]

    def check_kinds(self, metrics: dict[str, float]) -> list[tuple[str, str]]:
        """`check` with each warning's kind: "length", "perplexity", "kl" or "repetition"."""
        keys = ("reward/score_mean", "response/length_mean", "policy/perplexity")
        self.history.append({k: float(metrics[k]) for k in keys})
        if len(self.history) <= self.window:
            return []
        base = {k: sum(h[k] for h in self.history[: self.window]) / self.window for k in keys}
        if metrics["reward/score_mean"] <= base["reward/score_mean"]:
            return []
        warnings: list[tuple[str, str]] = []
        length, base_length = metrics["response/length_mean"], base["response/length_mean"]
        if base_length > 0 and abs(length - base_length) / base_length > self.length_change:
            warnings.append(
                ("length", f"response length moved from {base_length:.1f} to {length:.1f}")
            )
        ppl, base_ppl = metrics["policy/perplexity"], base["policy/perplexity"]
        if ppl < self.perplexity_drop * base_ppl:
            warnings.append(
                ("perplexity", f"policy perplexity fell from {base_ppl:.2f} to {ppl:.2f}")
            )
        if metrics.get("policy/kl_to_ref", 0.0) > self.max_kl:  # absent: no reference run
            warnings.append(
                ("kl", f"KL to the reference is {metrics['policy/kl_to_ref']:.1f} nats")
            )
        if metrics["response/repetition"] > self.max_repetition:
            share = metrics["response/repetition"]
            warnings.append(("repetition", f"{share:.0%} of responses repeat themselves"))
        return [(kind, f"pattern collapse? reward rose while {w}") for kind, w in warnings]

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, list[dict[str, float]]]) -> None:
        self.history = list(state["history"])


@dataclass
class ConsoleThrottle:
    """Which repeated warnings to show on the console: each kind at most once every `every`
    iterations. Every warning still reaches the metrics (`warn/pattern_collapse`) and the
    run's result; only the console is spared."""

    every: int = 10
    shown: dict[str, int] = field(default_factory=dict)
    hidden: int = 0

    def show(self, kind: str, iteration: int) -> bool:
        last = self.shown.get(kind)
        if last is None or iteration - last >= self.every:
            self.shown[kind] = iteration
            return True
        self.hidden += 1
        return False


def ended_at(ids: torch.Tensor, end_ids: int | Sequence[int]) -> torch.Tensor:
    """(B, T) bool: where `ids` holds one of the end tokens `end_ids` (the rows' valid tokens
    still have to be masked by the caller)."""
    ends = torch.as_tensor([end_ids] if isinstance(end_ids, int) else list(end_ids))
    return torch.isin(ids, ends.to(ids.device))


def rollout_metrics(exp: Experience, eos_id: int | Sequence[int]) -> dict[str, float]:
    """What every online trainer logs about a rollout: the reward (and each component), KL to
    the reference (when computed), perplexities, reply length, the share of replies ended by
    an end token (`eos_id`: one id or several, `data.stop_token_ids`) and repetition."""
    mask = exp.response_mask
    ended = ended_at(exp.response_ids, eos_id) & mask
    out = {
        "reward/score_mean": float(exp.scores.mean()),
        "reward/score_std": float(exp.scores.std()) if len(exp.scores) > 1 else 0.0,
        "policy/perplexity": perplexity(exp.old_logprobs, mask),
        "response/length_mean": float(mask.sum(1).float().mean()),
        "response/eos_fraction": float(ended.any(1).float().mean()),
        "response/repetition": repetition_fraction(exp.response_ids, mask),
    }
    if len(exp.score_parts) > 1:
        out.update({f"reward/{k}": float(v.mean()) for k, v in exp.score_parts.items()})
    if exp.ref_logprobs is not None:
        out["policy/kl_to_ref"] = float(
            sequence_kl(exp.old_logprobs, exp.ref_logprobs, mask).mean()
        )
        out["ref/perplexity"] = perplexity(exp.ref_logprobs, mask)
    return out
