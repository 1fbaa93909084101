"""Export: judgments as the files the trainers read, and the report beside them.

- Red-team projects ask for the *more harmful* reply (Bai et al. 2022 §2.2: red-team workers
  "choose the more harmful response"); `export` turns that round, so the exported `chosen` is
  always the reply to train towards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from rlhfkit.label import scales
from rlhfkit.label.db import Item, Judgment, Project
from rlhfkit.label.service.common import THUMBS, LabelError
from rlhfkit.label.service.stats import judgments, stats

EXPORT_FORMATS = ("pairs", "ranked", "hh", "ratings")


def _prompt_field(messages: list[dict[str, str]]) -> str | list[dict[str, str]]:
    """One user turn as plain text (what `sim collect` writes), else the messages list."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def _hh(messages: list[dict[str, str]], reply: str) -> str:
    speaker = {"user": "Human", "assistant": "Assistant", "system": "System"}
    turns = "".join(f"\n\n{speaker[m['role']]}: {m['content']}" for m in messages)
    return f"{turns}\n\nAssistant: {reply}"


def _order(j: Judgment, item: Item, red_team: bool) -> list[int] | None:
    """Candidates best first as the trainer should learn them (None for a tie)."""
    if j.ranking is not None:
        order = list(j.ranking)
    elif j.choice is None:
        return None
    else:
        order = [j.choice, 1 - j.choice]
    return order[::-1] if red_team else order


def export_rows(
    db: Session,
    project: Project,
    format: str = "pairs",
    ties: str = "drop",
    threshold: int | None = None,
    aspect: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows of the trainer format, report: who labelled what and the agreement table).

    pairs: {prompt, chosen, rejected, margin (the strength; for a ranking, the difference of
    places), meta}, a ranking expanded into its K(K−1)/2 pairs; ranked: {prompt, responses best
    first, meta}; hh: {chosen, rejected} HH transcripts. `ties`: "drop" or "keep" (pairs only:
    kept as margin 0 with `meta.tie`, in the order shown). ratings (rating projects, the only
    format they have): see `rating_rows`.
    """
    if format not in EXPORT_FORMATS:
        raise LabelError(422, f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if ties not in ("drop", "keep"):
        raise LabelError(422, f"ties must be 'drop' or 'keep', got {ties!r}")
    if (format == "ratings") != (project.kind == "rating"):
        raise LabelError(
            422,
            "a rating project exports --format ratings"
            if project.kind == "rating"
            else f"--format ratings is for rating projects; {project.name!r} is {project.kind}",
        )
    if format == "ratings":
        return rating_rows(db, project, threshold, aspect)
    if threshold is not None or aspect is not None:
        raise LabelError(422, "threshold and aspect are for --format ratings")
    return comparison_rows(db, project, format, ties)


def comparison_rows(
    db: Session, project: Project, format: str, ties: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The pairs / ranked / hh rows of a pairwise, ranking or chat project (see `export_rows`)."""
    red_team = project.mode == "red_team"
    rows: list[dict[str, Any]] = []
    who: list[dict[str, Any]] = []
    for j, item, user in judgments(db, project):
        meta = {
            **item.meta,
            "project": project.name,
            "item": item.id,
            "external_id": item.external_id,
            "annotator": user.name,
            "display_order": j.display_order,
            "strength": j.strength,
            "flags": j.flags,
            "note": j.note,
            "seconds": j.seconds,
        }
        if red_team:
            meta["picked"] = "more harmful"
        who.append(
            {
                "item": item.id,
                "external_id": item.external_id,
                "annotator": user.name,
                "choice": j.choice,
                "ranking": j.ranking,
                "strength": j.strength,
            }
        )
        order = _order(j, item, red_team)
        prompt = _prompt_field(item.prompt)
        if order is None:
            if ties == "keep" and format == "pairs":
                a, b = j.display_order[:2]
                rows.append(
                    {
                        "prompt": prompt,
                        "chosen": item.candidates[a],
                        "rejected": item.candidates[b],
                        "margin": 0,
                        "meta": {**meta, "tie": True},
                    }
                )
            continue
        texts = [item.candidates[c] for c in order]
        if format == "ranked":
            rows.append({"prompt": prompt, "responses": texts, "meta": meta})
            continue
        if j.ranking is not None:
            pairs = [
                (texts[p], texts[q], q - p)
                for p in range(len(texts))
                for q in range(p + 1, len(texts))
            ]
        else:
            pairs = [(texts[0], texts[1], j.strength)]
        for chosen, rejected, margin in pairs:
            if format == "hh":
                rows.append(
                    {"chosen": _hh(item.prompt, chosen), "rejected": _hh(item.prompt, rejected)}
                )
            else:
                rows.append(
                    {
                        "prompt": prompt,
                        "chosen": chosen,
                        "rejected": rejected,
                        "margin": margin,
                        "meta": meta,
                    }
                )
    report = {"project": project.name, "format": format, "ties": ties, "rows": len(rows),
              "labels": who, "agreement": stats(db, project)}  # fmt: skip
    return rows, report


def write_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def label_rule(scale: str, threshold: int | None) -> tuple[Any, str]:
    """`rlhfkit.label.scales.label_rule`, its refusal as a 422."""
    try:
        return scales.label_rule(scale, threshold)
    except ValueError as e:
        raise LabelError(422, str(e)) from None


def rating_rows(
    db: Session, project: Project, threshold: int | None = None, aspect: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Unpaired rows {prompt, completion, label, meta}, the format TRL's and OpenRLHF's KTO
    trainers read (and `rlhfkit kto`): one row per rating judgment, `label` from the score of
    `aspect` (default: the project's first) by `label_rule`. `meta` holds every aspect's score
    ("up" / "down" for thumbs), the annotator, the rule, flags, note and seconds."""
    aspects = {a["name"]: a["scale"] for a in project.settings["aspects"]}
    aspect = aspect or next(iter(aspects))
    if aspect not in aspects:
        raise LabelError(422, f"aspect: one of {', '.join(aspects)}, got {aspect!r}")
    to_label, rule = label_rule(aspects[aspect], threshold)
    up_down = {v: k for k, v in THUMBS.items()}
    rows: list[dict[str, Any]] = []
    who: list[dict[str, Any]] = []
    dropped = 0
    for j, item, user in judgments(db, project):
        scores = {
            name: up_down[score] if aspects[name] == "thumbs" else score
            for name, score in (j.scores or {}).items()
        }
        who.append({"item": item.id, "external_id": item.external_id, "annotator": user.name,
                    "scores": scores})  # fmt: skip
        label = to_label(j.scores[aspect])
        if label is None:
            dropped += 1
            continue
        meta = {
            **item.meta,
            "project": project.name,
            "item": item.id,
            "external_id": item.external_id,
            "annotator": user.name,
            "scores": scores,
            "aspect": aspect,
            "scale": aspects[aspect],
            "rule": rule,
            "flags": j.flags,
            "note": j.note,
            "seconds": j.seconds,
        }
        rows.append(
            {
                "prompt": _prompt_field(item.prompt),
                "completion": item.candidates[0],
                "label": label,
                "meta": meta,
            }
        )
    report = {
        "project": project.name,
        "format": "ratings",
        "aspect": aspect,
        "scale": aspects[aspect],
        "rule": rule,
        "rows": len(rows),
        "desirable": sum(r["label"] for r in rows),
        "undesirable": sum(not r["label"] for r in rows),
        "dropped_middle": dropped,
        "labels": who,
        "agreement": stats(db, project),
    }
    return rows, report
