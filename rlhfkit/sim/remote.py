"""`rlhfkit sim collect --server URL`: the simulated annotators label through the label app.

The same comparisons as offline (`feedback.collect_comparisons`), but every judgment travels
through the app's JSON API and database, so the app is exercised exactly as people would use it:

1. the policy's replies are sampled as offline (`feedback.sample_replies`, same seed), and the
   same pairs are kept (distinct, non-empty);
2. for each pair, in order, the annotator and their random draw come from the offline stream
   (`Random("feedback-<seed>")`: `choice` of annotator, then one uniform u), so the project is
   created with overlap 1 and each item is assigned (`assign_to`) to that annotator's account
   (made on first use);
3. each simulated annotator, in its own thread with its own API token, fetches its next task,
   sees the replies in the order the server drew for it, and answers with the candidate it
   prefers: candidate 0 (the first sample) when u < P(first preferred) — the Bradley–Terry
   draw `simulate_preference` makes offline — with a strength from that probability. The
   simulated annotator has no position bias, so it reads the candidate index the API gives
   beside each letter rather than the letter;
4. the project is exported in the `pairs` format and the offline meta (gold scores and
   behaviours of chosen and rejected) is added back, so the file equals the offline one in
   prompt, chosen and rejected, row for row.

Ratings (`sim collect --kind rating`, `rate_through_server`) go the same way: the scores are
drawn before labelling (`rlhfkit.sim.ratings.plan_ratings`), each reply becomes a rating item
assigned to its annotator, and the `ratings` export equals the offline rows field for field.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from rlhfkit.sim.annotators import Annotator
from rlhfkit.sim.gold import judge
from rlhfkit.types import PromptRecord


def _strength(p_chosen: float) -> int:
    """Strength on the app's 1–3 scale from the annotator's own preference probability."""
    return 3 if p_chosen >= 0.9 else 2 if p_chosen >= 0.7 else 1


def collect_through_server(
    url: str,
    token: str,
    project_name: str,
    prompts: Sequence[PromptRecord],
    samples: list[list[str]],
    annotators: Sequence[Annotator],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Label `samples` (two lists of replies, one per prompt) through the app at `url` with an
    admin's API `token`; returns the exported preference rows (see the module docstring)."""
    import httpx

    from rlhfkit.sim.feedback import _prompt_field

    rng = random.Random(f"feedback-{seed}")
    pairs = []  # (record, reply a, reply b, gold verdicts, annotator, u)
    for record, a, b in zip(prompts, samples[0], samples[1], strict=True):
        if a == b or not a or not b:
            continue
        verdicts = (judge(record.prompt, a), judge(record.prompt, b))
        annotator = rng.choice(list(annotators))
        pairs.append((record, a, b, verdicts, annotator, rng.random()))
    by_name = {a.name: a for a in annotators}

    def decide(name: str, task: dict[str, Any]) -> dict[str, Any]:
        record, a, b, (va, vb), annotator, u = pairs[int(task["external_id"])]
        if annotator.name != name:
            raise RuntimeError(f"task {task['task']} was assigned to {name}, not {annotator.name}")
        p_first = by_name[name].p_first(va.score, a, vb.score, b)
        winner = 0 if u < p_first else 1
        letter = next(c["label"] for c in task["candidates"] if c["candidate"] == winner)
        p_chosen = p_first if winner == 0 else 1 - p_first
        return {"choice": letter, "strength": _strength(p_chosen)}

    items = [
        {
            "id": str(i),
            "prompt": _prompt_field(record),
            "responses": [a, b],
            "assign_to": [annotator.name],
            "meta": {"source": "policy", "family": va.family},
        }
        for i, (record, a, b, (va, _), annotator, _) in enumerate(pairs)
    ]
    project = {"name": project_name, "kind": "pairwise", "overlap": 1}
    try:
        rows = _label(url, token, project, items, decide, list(by_name), {"format": "pairs"})
    except httpx.HTTPError as e:  # the server's own refusals arrive as LabelClientError
        raise RuntimeError(f"cannot reach the label server ({e})") from e

    for row in rows:
        _, a, _, (va, vb), _, _ = pairs[int(row["meta"]["external_id"])]
        chosen, rejected = (va, vb) if row["chosen"] == a else (vb, va)
        row["meta"].update(
            chosen_gold=chosen.score,
            rejected_gold=rejected.score,
            chosen_behaviour=chosen.behaviour,
            rejected_behaviour=rejected.behaviour,
        )
    return rows


def _label(
    url: str,
    token: str,
    project: dict[str, Any],
    items: list[dict[str, Any]],
    decide: Callable[[str, dict[str, Any]], dict[str, Any]],
    annotators: Sequence[str],
    export: dict[str, Any],
) -> list[dict[str, Any]]:
    """The annotators' accounts, the `project` and its `items` on the server, the labelling
    (one thread per annotator, `decide`), then the rows of the export with `export`'s query."""
    from rlhfkit.label.client import LabelClient, label_all

    with LabelClient(url, token) as admin:
        existing = {u["name"] for u in admin.users()}
        for name in annotators:
            if name not in existing:
                admin.create_user(name, secrets.token_urlsafe(16))
        tokens = {name: admin.user_token(name) for name in annotators}
        created = admin.create_project(**project)
        for start in range(0, len(items), 500):  # bounded request bodies
            admin.add_items(created["id"], items[start : start + 500])
        label_all(url, tokens, created["id"], decide)
        return admin.call("GET", f"/api/projects/{created['id']}/export", params=export)["rows"]


def rate_through_server(
    url: str,
    token: str,
    project_name: str,
    planned: Sequence[Any],
    aspects: Sequence[dict[str, str]],
    threshold: int | None = None,
) -> list[dict[str, Any]]:
    """Ratings through the app: `planned` (`rlhfkit.sim.ratings.plan_ratings`, drawn before
    any labelling) become a rating project with overlap 1, each reply assigned to its
    annotator's account; each annotator, in its own thread, fetches its tasks and answers with
    its planned scores; the `ratings` export (label from the first aspect, `threshold`) comes
    back with the gold score and behaviour added to `meta`, so the rows equal
    `rlhfkit.sim.ratings.rating_rows` of the same plan, row for row."""
    import httpx

    from rlhfkit.sim.feedback import _prompt_field

    names = list(dict.fromkeys(p.annotator.name for p in planned))

    def decide(name: str, task: dict[str, Any]) -> dict[str, Any]:
        p = planned[int(task["external_id"])]
        if p.annotator.name != name:
            raise RuntimeError(
                f"task {task['task']} was assigned to {name}, not {p.annotator.name}"
            )
        return {"scores": p.scores}

    items = [
        {"id": str(i), "prompt": _prompt_field(p.record), "completion": p.reply,
         "assign_to": [p.annotator.name], "meta": {"source": "policy", "family": p.verdict.family}}
        for i, p in enumerate(planned)
    ]  # fmt: skip
    project = {"name": project_name, "kind": "rating", "overlap": 1,
               "aspects": [f"{a['name']}:{a['scale']}" for a in aspects]}  # fmt: skip
    export = {"format": "ratings", **({} if threshold is None else {"threshold": threshold})}
    try:
        rows = _label(url, token, project, items, decide, names, export)
    except httpx.HTTPError as e:  # the server's own refusals arrive as LabelClientError
        raise RuntimeError(f"cannot reach the label server ({e})") from e
    out = []
    for row in rows:
        p = planned[int(row["meta"]["external_id"])]
        meta = {
            "source": "policy",
            "family": p.verdict.family,
            "annotator": row["meta"]["annotator"],
            "scores": row["meta"]["scores"],
            "aspect": row["meta"]["aspect"],
            "scale": row["meta"]["scale"],
            "rule": row["meta"]["rule"],
            "gold": p.verdict.score,
            "behaviour": p.verdict.behaviour,
        }
        out.append({**{k: row[k] for k in ("prompt", "completion", "label")}, "meta": meta})
    return out
