"""Statistics of a project: progress, flags, notes, time per judgment and agreement."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.label import agreement
from rlhfkit.label.db import Assignment, Item, Judgment, Project, User


def judgments(db: Session, project: Project) -> list[tuple[Judgment, Item, User]]:
    """Every (judgment, item, annotator) of `project`, in import order."""
    q = (
        select(Judgment, Item, User)
        .join(Item, Item.id == Judgment.item_id)
        .join(User, User.id == Judgment.user_id)
        .where(Item.project_id == project.id)
        .order_by(Item.position, Judgment.id)
    )
    return [tuple(r) for r in db.execute(q)]  # type: ignore[misc]


def stats(db: Session, project: Project) -> dict[str, Any]:
    """Counts, agreement (see `agreement`), gold agreement and time per judgment."""
    labels: dict[str, dict[agreement.Unit, agreement.Value]] = defaultdict(dict)
    gold: dict[agreement.Unit, agreement.Value] = {}
    seconds: dict[str, list[float]] = defaultdict(list)
    flags: dict[str, int] = defaultdict(int)
    rows = judgments(db, project)
    rating = project.kind == "rating"
    for j, item, user in rows:
        if rating:
            labels[user.name].update(agreement.rating_labels(item.id, j.scores or {}))
            gold.update(agreement.rating_labels(item.id, item.gold or {}))
        else:
            labels[user.name].update(
                agreement.comparison_labels(item.id, j.choice, j.ranking, len(item.candidates))
            )
            if item.gold:
                gold.update(agreement.gold_labels(item.id, item.gold, len(item.candidates)))
        if j.seconds is not None:
            seconds[user.name].append(j.seconds)
        for f in j.flags:
            flags[f] += 1
    n_items = db.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
    status_counts = dict(
        db.execute(
            select(Assignment.status, func.count())
            .join(Item, Item.id == Assignment.item_id)
            .where(Item.project_id == project.id)
            .group_by(Assignment.status)
        ).all()
    )
    table = agreement.agreement_table(labels, gold, seconds)
    notes = [
        {"item": item.id, "annotator": user.name, "note": j.note, "flags": j.flags}
        for j, item, user in rows
        if j.note or j.flags
    ][-50:]
    all_seconds = sorted(s for v in seconds.values() for s in v)
    if rating:
        table["aspects"] = agreement.rating_tables(labels, gold, project.settings["aspects"])
    return {
        "project": project.name,
        "kind": project.kind,
        "mode": project.mode,
        "overlap": project.overlap,
        "items": n_items,
        "tasks_open": status_counts.get("open", 0),
        "tasks_done": status_counts.get("done", 0),
        "judgments": len(rows),
        "ties": sum(
            j.choice is None and j.ranking is None and j.scores is None for j, _, _ in rows
        ),
        "flags": dict(flags),
        "median_seconds": all_seconds[len(all_seconds) // 2] if all_seconds else None,
        "notes": notes,
        **table,
    }
