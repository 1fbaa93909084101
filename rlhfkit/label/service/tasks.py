"""Tasks (an item given to one annotator) and the judgments that answer them.

- Exactly once: submitting flips the assignment from "open" to "done" with a conditional UPDATE
  and inserts the judgment in the same transaction; a second submission of the same task finds
  no open row and gets 409, and the unique `judgments.assignment_id` backs this up.
"""

from __future__ import annotations

import string
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.label.db import Assignment, Chat, Item, Judgment, Project, User, now, valid_id
from rlhfkit.label.service.common import (
    FLAGS,
    MAX_TEXT,
    SCALES,
    STRENGTHS,
    THUMBS,
    LabelError,
    rating_value,
    storable,
    whole_number,
)


def letters_of(n: int) -> list[str]:
    return list(string.ascii_uppercase[:n])


def tasks_of(
    db: Session, user: User, project: Project | None, status: str | None
) -> list[Assignment]:
    q = (
        select(Assignment)
        .join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id)
    )
    if project is not None:
        q = q.where(Item.project_id == project.id)
    if status is not None:
        q = q.where(Assignment.status == status)
    return list(db.scalars(q.order_by(Item.position, Assignment.id)))


def next_task(db: Session, user: User, project: Project) -> Assignment | None:
    q = (
        select(Assignment)
        .join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id, Item.project_id == project.id, Item.chat_id.is_(None))
        .where(Assignment.status == "open")
        .order_by(Item.position, Assignment.id)
        .limit(1)
    )
    return db.scalar(q)


def get_task(db: Session, user: User, assignment_id: int) -> Assignment:
    """The task, if it is `user`'s. Another annotator's task is reported as missing, so ids
    cannot be probed."""
    task = db.get(Assignment, assignment_id) if valid_id(assignment_id) else None
    if task is None or task.user_id != user.id:
        raise LabelError(404, f"no task {assignment_id} for you")
    return task


def task_view(db: Session, task: Assignment, mark_served: bool = True) -> dict[str, Any]:
    """What the annotator sees: prompt, candidates in display order under letters."""
    item = db.get(Item, task.item_id)
    project = db.get(Project, item.project_id)
    if mark_served and task.served_at is None and task.status == "open":
        task.served_at = now()
        db.commit()
    letters = letters_of(len(task.display_order))
    kind = project.kind if project.kind in ("ranking", "rating") else "pairwise"
    view = {
        "task": task.id,
        "project": project.name,
        "project_id": project.id,
        "kind": kind,
        "mode": project.mode,
        "guidelines": project.guidelines,
        "status": task.status,
        "item": item.id,
        "external_id": item.external_id,
        "chat": item.chat_id,
        "prompt": item.prompt,
        "candidates": [
            {"label": letters[pos], "candidate": c, "text": item.candidates[c]}
            for pos, c in enumerate(task.display_order)
        ],
    }
    if kind == "rating":
        view["aspects"] = [
            {**a, "values": _scale_values(a["scale"])} for a in project.settings["aspects"]
        ]
    return view


def _scale_values(scale: str) -> list[str | int]:
    """What an answer may give for `scale`, in the order a form shows them."""
    if scale == "thumbs":
        return list(THUMBS)[::-1]  # up, down
    lo, hi = SCALES[scale]
    return list(range(lo, hi + 1))


def _rating_scores(project: Project, raw: Any) -> dict[str, int]:
    """`scores`: {aspect: score} for every aspect of the project, and only those."""
    aspects = project.settings["aspects"]
    names = [a["name"] for a in aspects]
    if not isinstance(raw, dict) or sorted(raw, key=str) != sorted(names):
        raise LabelError(422, f"scores: one score for each of {', '.join(names)}")
    return {
        a["name"]: rating_value(raw[a["name"]], a["scale"], f"scores.{a['name']}") for a in aspects
    }


def _verdict(project: Project, task: Assignment, answer: dict[str, Any]) -> dict[str, Any]:
    """The judgment's choice, strength, ranking and scores from `answer` (see `submit`)."""
    letters = letters_of(len(task.display_order))
    to_candidate = dict(zip(letters, task.display_order, strict=True))
    out: dict[str, Any] = dict.fromkeys(("choice", "strength", "ranking", "scores"))
    if project.kind == "rating":
        out["scores"] = _rating_scores(project, answer.get("scores"))
    elif project.kind == "ranking":
        raw = answer.get("ranking")
        if not isinstance(raw, list) or sorted(map(str, raw)) != letters:
            raise LabelError(422, f"ranking: every letter of {', '.join(letters)} once, best first")
        out["ranking"] = [to_candidate[x] for x in raw]
    elif answer.get("choice") == "tie":
        if answer.get("strength") is not None:
            raise LabelError(422, "strength: a tie has no strength (leave it out)")
    elif answer.get("choice") in letters:
        out["choice"] = to_candidate[answer["choice"]]
        out["strength"] = answer.get("strength")
        if not whole_number(out["strength"]) or out["strength"] not in STRENGTHS:
            raise LabelError(422, "strength: 1 (slightly), 2 (better) or 3 (much better)")
    else:
        raise LabelError(422, f"choice: one of {', '.join(letters)} or 'tie'")
    return out


def submit(db: Session, user: User, assignment_id: int, answer: dict[str, Any]) -> Judgment:
    """Validate and store one judgment (see the module docstring for exactly-once).

    `answer`: `choice` "A" | "B" | "tie" and `strength` 1–3 (pairwise and chat; a tie has
    none); `ranking`, the letters best first (ranking); `scores`, {aspect: "up" | "down" or a
    Likert number} (rating); optional `flags` (unsafe, pii, wrong_language) and `note`.
    """
    task = get_task(db, user, assignment_id)
    item = db.get(Item, task.item_id)
    project = db.get(Project, item.project_id)
    verdict = _verdict(project, task, answer)
    flags = answer.get("flags") or []
    if not isinstance(flags, list) or not all(f in FLAGS for f in flags):
        raise LabelError(422, f"flags: a list of {', '.join(FLAGS)}")
    note = answer.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_TEXT:
        raise LabelError(422, f"note: text of at most {MAX_TEXT} characters")
    storable(note, "note")
    served = task.served_at
    closed = db.execute(
        update(Assignment)
        .where(Assignment.id == task.id, Assignment.status == "open")
        .values(status="done")
    )
    if closed.rowcount != 1:
        db.rollback()
        raise LabelError(409, f"task {task.id} is already answered")
    judgment = Judgment(
        assignment_id=task.id,
        item_id=item.id,
        user_id=user.id,
        display_order=task.display_order,
        **verdict,
        flags=sorted(set(flags)),
        note=note,
        seconds=(now() - served).total_seconds() if served else None,
    )
    db.add(judgment)
    if item.chat_id is not None:
        chat = db.get(Chat, item.chat_id, populate_existing=True)  # read under the write lock
        choice = verdict["choice"]
        picked = choice if choice is not None else task.display_order[0]
        chat.messages = [*chat.messages, {"role": "assistant", "content": item.candidates[picked]}]
        chat.status, chat.item_id = "human", None
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise LabelError(409, f"task {task.id} is already answered") from None
    return judgment
