"""Projects: create, find, and list them with a user's progress."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.label.db import Assignment, Item, Project, User, valid_id
from rlhfkit.label.service.common import (
    GUIDELINES,
    KINDS,
    MODES,
    LabelError,
    parse_aspects,
    storable,
)


def create_project(
    db: Session,
    name: str,
    kind: str,
    mode: str = "helpful",
    overlap: int = 1,
    guidelines: str | None = None,
    policy_a: str | None = None,
    policy_b: str | None = None,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    scale: str = "thumbs",
    aspects: Any = None,
) -> Project:
    """A new project. Chat projects need `policy_a`; rating projects rate one reply per item on
    `aspects` (see `common.parse_aspects`; default one aspect, "overall", on `scale`)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 128 or not name.strip():
        raise LabelError(422, "name: 1–128 characters")
    storable(name, "name")
    for field, value in (
        ("guidelines", guidelines),
        ("policy_a", policy_a),
        ("policy_b", policy_b),
    ):
        if value is not None:
            storable(value, field)
    if kind not in KINDS:
        raise LabelError(422, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if mode not in MODES:
        raise LabelError(422, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(overlap, int) or not 1 <= overlap <= 20:
        raise LabelError(422, "overlap: annotators per item, 1–20")
    if kind == "chat" and not policy_a:
        raise LabelError(422, "a chat project needs policy_a (a model folder)")
    if kind == "rating" and mode != "helpful":
        raise LabelError(422, "a rating project rates each reply on its own: mode must be helpful")
    if kind != "rating" and (aspects or scale != "thumbs"):
        raise LabelError(422, "scale and aspects are for rating projects")
    if db.scalar(select(Project).where(Project.name == name)) is not None:
        raise LabelError(409, f"project {name!r} exists")
    settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
    if policy_a:
        settings["policy_a"] = policy_a
        settings["policy_b"] = policy_b or policy_a
    if kind == "rating":
        settings["aspects"] = parse_aspects(aspects, scale)
    project = Project(
        name=name,
        kind=kind,
        mode=mode,
        overlap=overlap,
        guidelines=guidelines if guidelines else GUIDELINES["rating" if kind == "rating" else mode],
        settings=settings,
    )
    db.add(project)
    db.commit()
    return project


def get_project(db: Session, ref: int | str) -> Project:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        project = db.get(Project, int(ref)) if valid_id(int(ref)) else None
    else:
        project = db.scalar(select(Project).where(Project.name == storable(ref, "project")))
    if project is None:
        raise LabelError(404, f"no project {ref!r}")
    return project


def projects_for(db: Session, user: User) -> list[tuple[Project, int, int]]:
    """(project, open tasks, done tasks) of `user`; an admin sees every project."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"open": 0, "done": 0})
    rows = db.execute(
        select(Item.project_id, Assignment.status, func.count())
        .join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id)
        .group_by(Item.project_id, Assignment.status)
    )
    for pid, status, n in rows:
        counts[pid][status] = n
    projects = db.scalars(select(Project).order_by(Project.id)).all()
    return [
        (p, counts[p.id]["open"], counts[p.id]["done"])
        for p in projects
        if user.role == "admin" or p.id in counts or p.kind == "chat"
    ]
