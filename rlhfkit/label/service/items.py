"""Import: rows checked into items, and items assigned to annotators.

- Overlapping assignment: each item goes to `overlap` distinct annotators, the least loaded in
  the project first (ties by account order), so r-fold overlap is spread evenly; an import row
  may name its annotators instead (`assign_to`).
- The order candidates are shown in is drawn from the OS's CSPRNG when the assignment is made
  and copied into the judgment, so position bias can be measured later (the A/B order of the
  Anthropic interface, randomised per comparison).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhfkit.label.db import Assignment, Item, Project, User
from rlhfkit.label.service.common import (
    MAX_CANDIDATES,
    LabelError,
    json_field,
    rating_value,
    storable,
    text_field,
    whole_number,
)

_sysrand = random.SystemRandom()


def parse_prompt(value: Any, field: str = "prompt") -> list[dict[str, str]]:
    """A prompt as a messages list: text is one user turn; a list must alternate user and
    assistant turns (an optional system turn first) and end with the user's."""
    if isinstance(value, str):
        return [{"role": "user", "content": text_field(value, field)}]
    if not isinstance(value, list) or not value:
        raise LabelError(422, f"{field}: expected text or a non-empty list of messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise LabelError(
                422, f"{field}[{i}]: expected {{role: user|assistant|system, content}}"
            )
        messages.append(
            {"role": m["role"], "content": text_field(m.get("content"), f"{field}[{i}].content")}
        )
    if messages[-1]["role"] != "user":
        raise LabelError(422, f"{field}: the last message must be the user's")
    return messages


def parse_item(row: Any, kind: str, where: str) -> dict[str, Any]:
    """One import row → item fields. Candidates come from `responses` (a list) or from
    `chosen` and `rejected` (what `rlhfkit sim collect` writes; shown in random order, so which
    was chosen before is not revealed); `gold` is the best candidate's index or a best-first
    list; `assign_to` names the annotators; `id` and `meta` are kept. A rating item has one
    reply, `completion` (or `response`, or `responses` with one), and its `gold` is a score
    (or {aspect: score}), checked against the project's aspects on import."""
    if not isinstance(row, dict):
        raise LabelError(422, f"{where}: expected a JSON object")
    prompt = parse_prompt(row.get("prompt"), f"{where}: prompt")
    if kind == "rating":
        candidates = [_rating_reply(row, where)]
        gold = row.get("gold")
    else:
        candidates = _candidates(row, kind, where)
        gold = _comparison_gold(row.get("gold"), len(candidates), where)
    assign_to = row.get("assign_to")
    if assign_to is not None and (
        not isinstance(assign_to, list) or not all(isinstance(a, str) for a in assign_to)
    ):
        raise LabelError(422, f"{where}: assign_to: a list of user names")
    for i, name in enumerate(assign_to or []):
        storable(name, f"{where}: assign_to[{i}]")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise LabelError(422, f"{where}: meta: expected an object")
    json_field(meta, f"{where}: meta")
    external_id = row.get("id")
    if external_id is not None:
        external_id = storable(str(external_id), f"{where}: id")[:128]
    return {
        "prompt": prompt,
        "candidates": candidates,
        "gold": gold,
        "meta": meta,
        "external_id": external_id,
        "assign_to": assign_to,
        "where": where,
    }


def _candidates(row: dict[str, Any], kind: str, where: str) -> list[str]:
    if "responses" in row:
        raw = row["responses"]
        if not isinstance(raw, list):
            raise LabelError(422, f"{where}: responses: expected a list")
        candidates = [text_field(r, f"{where}: responses[{i}]") for i, r in enumerate(raw)]
    elif "chosen" in row or "rejected" in row:
        candidates = [text_field(row.get(k), f"{where}: {k}") for k in ("chosen", "rejected")]
    else:
        raise LabelError(422, f"{where}: give `responses` or `chosen` and `rejected`")
    seen: dict[str, int] = {}
    for i, c in enumerate(candidates):  # the trainers' readers refuse these too (data.formats)
        j = seen.setdefault(c.strip(), i)
        if j != i:
            field = "responses" if "responses" in row else None
            what = (
                f"{field}[{i}]: identical to {field}[{j}]"
                if field
                else "rejected: identical to chosen"
            )
            raise LabelError(422, f"{where}: {what}")
    if kind == "pairwise" and len(candidates) != 2:
        raise LabelError(422, f"{where}: a pairwise item needs 2 replies, got {len(candidates)}")
    if not 2 <= len(candidates) <= MAX_CANDIDATES:
        raise LabelError(422, f"{where}: 2–{MAX_CANDIDATES} replies, got {len(candidates)}")
    return candidates


def _comparison_gold(gold: Any, n_candidates: int, where: str) -> list[int] | None:
    if gold is None:
        return None
    gold = [gold] if whole_number(gold) else gold
    if (
        not isinstance(gold, list)
        or not gold
        or not all(whole_number(g) and 0 <= g < n_candidates for g in gold)
        or len(set(gold)) != len(gold)
    ):
        raise LabelError(422, f"{where}: gold: a candidate index or a best-first list of them")
    return gold


def _rating_reply(row: dict[str, Any], where: str) -> str:
    """The one reply of a rating item."""
    keys = [k for k in ("completion", "response", "responses") if k in row]
    if len(keys) != 1 or "chosen" in row or "rejected" in row:
        raise LabelError(
            422, f"{where}: a rating item has one reply: give `completion` (or `response`)"
        )
    if keys[0] != "responses":
        return text_field(row[keys[0]], f"{where}: {keys[0]}")
    raw = row["responses"]
    if not isinstance(raw, list) or len(raw) != 1:
        raise LabelError(422, f"{where}: responses: a rating item has exactly one reply")
    return text_field(raw[0], f"{where}: responses[0]")


def rating_gold(gold: Any, aspects: list[dict[str, str]], where: str) -> dict[str, int] | None:
    """A rating item's known scores: one score (for the first aspect) or {aspect: score}."""
    if gold is None:
        return None
    if not isinstance(gold, dict):
        gold = {aspects[0]["name"]: gold}
    scales = {a["name"]: a["scale"] for a in aspects}
    unknown = [k for k in gold if k not in scales]
    if unknown or not gold:
        raise LabelError(
            422, f"{where}: gold: scores for the aspects {', '.join(scales)}, got {unknown or '{}'}"
        )
    return {k: rating_value(v, scales[k], f"{where}: gold.{k}") for k, v in gold.items()}


def decode_items_file(data: bytes, name: str) -> str:
    """The text of an import file, which must be UTF-8 (`read_items_file` drops a byte-order
    mark at its start, as the trainers' readers do)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LabelError(
            422, f"{name}:{line}: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None


def read_items_file(text: str, kind: str, name: str = "file") -> list[dict[str, Any]]:
    """Rows of a JSONL file (or one JSON list), each checked with `parse_item`; a bad row
    stops the import with its line number."""
    text = text.removeprefix("\ufeff")  # a byte-order mark, which every trainer accepts
    stripped = text.lstrip()
    if not stripped:
        raise LabelError(422, f"{name}: no items (the file is empty)")
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError(422, f"{name}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not rows:
            raise LabelError(422, f"{name}: no items (an empty list)")
        return [parse_item(r, kind, f"{name}: item {i}") for i, r in enumerate(rows)]
    items = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelError(422, f"{name}:{line_no}: not valid JSON ({e.msg})") from None
        items.append(parse_item(row, kind, f"{name}:{line_no}"))
    return items


def import_items(db: Session, project: Project, rows: Sequence[dict[str, Any]]) -> list[Item]:
    """Add parsed rows to `project` and assign them; all or nothing."""
    if project.kind == "chat":
        raise LabelError(422, "a chat project's items come from live chats, not imports")
    start = db.scalar(select(func.max(Item.position)).where(Item.project_id == project.id))
    start = -1 if start is None else start
    named = {n for r in rows for n in (r.get("assign_to") or [])}
    users = {u.name: u for u in db.scalars(select(User).where(User.name.in_(named)))}
    for row in rows:
        missing = [n for n in row.get("assign_to") or [] if n not in users]
        if missing:
            where = row.get("where", "item")
            raise LabelError(422, f"{where}: assign_to: no user {', '.join(map(repr, missing))}")
    if project.kind == "rating":
        aspects = project.settings["aspects"]
        rows = [
            {**r, "gold": rating_gold(r["gold"], aspects, r.get("where", "item"))} for r in rows
        ]
    items = []
    for offset, row in enumerate(rows, start=1):
        item = Item(
            project_id=project.id,
            position=start + offset,
            external_id=row["external_id"],
            prompt=row["prompt"],
            candidates=row["candidates"],
            gold=row["gold"],
            meta=row["meta"],
        )
        db.add(item)
        items.append(item)
    db.flush()
    explicit = [(it, r["assign_to"]) for it, r in zip(items, rows, strict=True) if r["assign_to"]]
    for item, names in explicit:
        for name in dict.fromkeys(names):
            db.add(new_assignment(item, users[name]))
    _assign(db, project, [it for it, r in zip(items, rows, strict=True) if not r["assign_to"]])
    db.commit()
    return items


def new_assignment(item: Item, user: User) -> Assignment:
    order = list(range(len(item.candidates)))
    _sysrand.shuffle(order)
    return Assignment(item_id=item.id, user_id=user.id, display_order=order)


def _assign(db: Session, project: Project, items: Sequence[Item]) -> None:
    """Give each item to the `overlap` least-loaded annotators (see the module docstring)."""
    if not items:
        return
    annotators = db.scalars(select(User).where(User.role == "annotator").order_by(User.id)).all()
    if len(annotators) < project.overlap:
        raise LabelError(
            422,
            f"project {project.name!r} wants {project.overlap} annotators per item but there "
            f"are {len(annotators)} annotator accounts (create them first)",
        )
    load = dict.fromkeys((u.id for u in annotators), 0)
    for uid, n in db.execute(
        select(Assignment.user_id, func.count())
        .join(Item, Item.id == Assignment.item_id)
        .where(Item.project_id == project.id)
        .group_by(Assignment.user_id)
    ):
        if uid in load:
            load[uid] = n
    for item in items:
        chosen = sorted(annotators, key=lambda u: (load[u.id], u.id))[: project.overlap]
        for user in chosen:
            db.add(new_assignment(item, user))
            load[user.id] += 1
