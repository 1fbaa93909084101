"""Ratings of a policy's own samples by the simulated annotators: a thumbs up or down, or a
Likert score, per reply and per aspect: the single-reply feedback KTO learns from, the
counterpart of `feedback.collect_comparisons`.

An annotator rates a reply y through a noisy latent, l = u(y) + T·ε with ε ~ Logistic(0, 1),
u(y) = gold(y) + length_bias · words(y) its comparison utility and T its temperature (the same
annotator, so ratings are as noisy as its comparisons):

- thumbs: up when l > 0, i.e. P(up) = σ(u(y) / T), the logistic of the gold score;
- Likert 1..K: 1 + the number of cut points below l (an ordered logit), with the K − 1 cut
  points evenly spaced over [−1.25, 0.75], so a correct answer (gold 1.0) lands at the top
  and a harmful one (−2.5) at the bottom;
- every aspect of the project gets its own draw of ε from the same utility: the world's gold
  score is one number, so helpful / honest / harmless differ here only by noise.

`plan_ratings` draws everything from one seeded stream before any labelling, so rating offline
(`collect_ratings`) and through the label app (`rlhfkit.sim.remote.rate_through_server`) give
the same rows. Rows are the app's `ratings` export: {prompt, completion, label, meta}, the label
by `rlhfkit.label.scales.label_rule` (Likert: above the middle true, below false, the middle
dropped; or score ≥ threshold), with the gold score and behaviour added to `meta` for
evaluation only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.label.scales import SCALES, THUMBS, label_rule
from rlhfkit.rollout import RolloutConfig
from rlhfkit.sim.annotators import Annotator
from rlhfkit.sim.feedback import _prompt_field, sample_replies
from rlhfkit.sim.gold import GoldJudgement, judge
from rlhfkit.types import PromptRecord

LIKERT_CUTS = (-1.25, 0.75)  # the lowest and highest cut point on the gold scale


@dataclass(frozen=True)
class PlannedRating:
    """One reply, who rates it, and the scores they give (thumbs as "up" / "down")."""

    record: PromptRecord
    reply: str
    verdict: GoldJudgement
    annotator: Annotator
    scores: dict[str, int | str]


def rate(annotator: Annotator, gold: float, reply: str, scale: str, u: float) -> int | str:
    """The score `annotator` gives a reply of gold score `gold` on `scale`, with `u` ~ U(0, 1)
    its noise draw (see the module docstring)."""
    u = min(max(u, 1e-12), 1 - 1e-12)
    latent = annotator.utility(gold, reply) + annotator.temperature * math.log(u / (1 - u))
    if scale == "thumbs":
        return "up" if latent > 0 else "down"
    lo, hi = SCALES[scale]
    first, last = LIKERT_CUTS
    cuts = [first + (last - first) * i / (hi - lo - 1) for i in range(hi - lo)]
    return lo + sum(c < latent for c in cuts)


def plan_ratings(
    prompts: Sequence[PromptRecord],
    samples: list[list[str]],
    annotators: Sequence[Annotator],
    aspects: Sequence[dict[str, str]],
    seed: int = 0,
) -> list[PlannedRating]:
    """Every distinct non-empty reply of each prompt, in order, rated on every aspect by one
    annotator drawn at random (`Random("ratings-<seed>")`: the annotator, then one uniform
    per aspect)."""
    if not annotators:
        raise ValueError("collect_ratings: no annotators")
    rng = random.Random(f"ratings-{seed}")
    planned = []
    for i, record in enumerate(prompts):
        for reply in [r for r in dict.fromkeys(s[i] for s in samples) if r]:
            verdict = judge(record.prompt, reply)
            annotator = rng.choice(list(annotators))
            scores = {
                a["name"]: rate(annotator, verdict.score, reply, a["scale"], rng.random())
                for a in aspects
            }
            planned.append(PlannedRating(record, reply, verdict, annotator, scores))
    return planned


def rating_rows(
    planned: Sequence[PlannedRating],
    aspects: Sequence[dict[str, str]],
    threshold: int | None = None,
) -> list[dict[str, Any]]:
    """The app's `ratings` export of `planned` (label from the first aspect), plus the gold."""
    to_label, rule = label_rule(aspects[0]["scale"], threshold)
    rows = []
    for p in planned:
        score = p.scores[aspects[0]["name"]]
        label = to_label(THUMBS[score] if isinstance(score, str) else score)
        if label is None:
            continue
        rows.append(
            {
                "prompt": _prompt_field(p.record),
                "completion": p.reply,
                "label": label,
                "meta": {
                    "source": "policy",
                    "family": p.verdict.family,
                    "annotator": p.annotator.name,
                    "scores": dict(p.scores),
                    "aspect": aspects[0]["name"],
                    "scale": aspects[0]["scale"],
                    "rule": rule,
                    "gold": p.verdict.score,
                    "behaviour": p.verdict.behaviour,
                },
            }
        )
    return rows


def sample_for_rating(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    cfg: RolloutConfig,
    seed: int = 0,
    k: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """`k` replies per prompt, the first `k` draws `sample_replies` makes (so `-k 2` rates
    exactly the replies the comparisons of the same seed compare)."""
    if k < 1:
        raise ValueError(f"collect_ratings: k must be at least 1 sample per prompt, got {k}")
    return sample_replies(policy, tokenizer, prompts, cfg, seed, progress=progress, k=max(k, 2))[:k]


def collect_ratings(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    annotators: Sequence[Annotator],
    cfg: RolloutConfig,
    aspects: Sequence[dict[str, str]],
    seed: int = 0,
    k: int = 1,
    threshold: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """`k` samples per prompt, each rated on every aspect by one random annotator; the rows
    of the `ratings` export (see the module docstring)."""
    samples = sample_for_rating(policy, tokenizer, prompts, cfg, seed, k, progress)
    return rating_rows(
        plan_ratings(prompts, samples, annotators, aspects, seed), aspects, threshold
    )


def gold_thumbs(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(rows whose label agrees with the sign of the gold score, rows with a non-zero gold):
    how often the noisy ratings agreed with the gold."""
    decided = [r for r in rows if r["meta"]["gold"] != 0]
    return sum(r["label"] == (r["meta"]["gold"] > 0) for r in decided), len(decided)


def check_rating_options(
    scale: str, aspects: str | None, threshold: int | None
) -> list[dict[str, str]]:
    """The aspects of `sim collect --kind rating`, checked as the app checks a project's; a
    mistake exits with one line."""
    from rlhfkit.errors import fail

    if scale not in SCALES:
        fail(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    parsed = []
    for part in (aspects or "overall").split(","):
        name, _, own = part.strip().partition(":")
        if not name or (own or scale) not in SCALES:
            fail(f"--aspects: {part!r}: NAME or NAME:SCALE with SCALE one of {', '.join(SCALES)}")
        parsed.append({"name": name, "scale": own or scale})
    try:
        label_rule(parsed[0]["scale"], threshold)
    except ValueError as e:
        fail(f"--threshold: {e}")
    return parsed


def collect_ratings_command(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    annotators: Sequence[Annotator],
    cfg: RolloutConfig,
    aspects: list[dict[str, str]],
    output: Any,
    seed: int,
    k: int,
    threshold: int | None,
    server: str | None,
    token: str | None,
    project: str | None,
) -> None:
    """`rlhfkit sim collect --kind rating`: rate offline or through the app, write the rows."""
    import json
    import os

    import typer

    samples = sample_for_rating(policy, tokenizer, prompts, cfg, seed, k)
    planned = plan_ratings(prompts, samples, annotators, aspects, seed)
    if server is None:
        rows = rating_rows(planned, aspects, threshold)
    else:
        from rlhfkit.sim.remote import rate_through_server

        token = token or os.environ.get("RLHFKIT_LABEL_TOKEN")
        if not token:
            raise typer.BadParameter("needs an admin token", param_hint="--server")
        try:
            rows = rate_through_server(
                server, token, project or f"sim-rate-{seed}", planned, aspects, threshold
            )
        except RuntimeError as e:  # the server's answer, or no server
            typer.secho(f"error: {server}: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    tmp.replace(output)
    agree, decided = gold_thumbs(rows)
    desirable = sum(r["label"] for r in rows)
    typer.echo(
        f"wrote {len(rows)} ratings to {output} ({desirable} desirable, {len(rows) - desirable} "
        f"not; {len(planned) - len(rows)} dropped at the middle of the scale); the label agreed "
        f"with the sign of the gold score in {agree}/{decided}"
    )
