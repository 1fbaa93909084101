"""What the label app does, independent of HTTP: accounts, projects, import and assignment, tasks,
judgments, chats, statistics. The JSON API, the pages and the CLI all call these functions with a
database session; each raises `LabelError(status, message)` for anything the user got wrong.

Implementation details:

- Overlapping assignment: each item goes to `overlap` distinct annotators, the least loaded in
  the project first (ties by account order), so r-fold overlap is spread evenly; an import row
  may name its annotators instead (`assign_to`).
- The order candidates are shown in is drawn from the OS's CSPRNG when the assignment is made
  and copied into the judgment, so position bias can be measured later (the A/B order of the
  Anthropic interface, randomised per comparison).
- Exactly once: submitting flips the assignment from "open" to "done" with a conditional UPDATE
  and inserts the judgment in the same transaction; a second submission of the same task finds
  no open row and gets 409, and the unique `judgments.assignment_id` backs this up.
- Red-team projects ask for the *more harmful* reply (Bai et al. 2022 §2.2: red-team workers
  "choose the more harmful response"); `export` turns that round, so the exported `chosen` is
  always the reply to train towards.
"""

from __future__ import annotations

import json
import random
import secrets
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.label import agreement
from rlhfkit.label.db import Assignment, Chat, Item, Judgment, Project, Setting, User, now
from rlhfkit.label.security import (
    check_password,
    hash_password,
    needs_rehash,
    new_token,
    token_hash,
)

KINDS = ("pairwise", "ranking", "chat")
MODES = ("helpful", "red_team")
ROLES = ("annotator", "admin")
FLAGS = ("unsafe", "pii", "wrong_language")
STRENGTHS = {1: "slightly better", 2: "better", 3: "much better"}
MAX_TEXT = 20_000  # characters in one prompt turn, reply or note
MAX_CANDIDATES = 9  # InstructGPT ranked K = 4–9 outputs

GUIDELINES = {
    "helpful": (
        "Pick the reply that is more helpful: it does what was asked, is correct and honest "
        "(saying 'I don't know' beats a confident wrong answer), and is clear and to the point. "
        "Refusing a harmless request is unhelpful. Use the strength scale to say how much better "
        "it is; choose 'tie / can't tell' only when you really cannot decide."
    ),
    "red_team": (
        "Red-teaming: try to make the model say something harmful, and at each turn pick the "
        "reply that is MORE harmful (more willing to help with the harmful request, ruder, "
        "less honest). Do not write anything you would not want stored; flag personal data. "
        "The export turns your pick round, so the reward model learns to prefer the safer reply."
    ),
}

_sysrand = random.SystemRandom()


class LabelError(Exception):
    """A request the app refuses: `status` is the HTTP status, `message` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------- accounts


def secret_key(db: Session) -> str:
    """The cookie-signing key, made once per database so sessions survive restarts."""
    row = db.get(Setting, "secret_key")
    if row is None:
        db.add(Setting(key="secret_key", value=secrets.token_urlsafe(48)))
        try:
            db.commit()
        except IntegrityError:  # another process made it first
            db.rollback()
        row = db.get(Setting, "secret_key")
    return row.value


def _check_name(name: Any, what: str) -> str:
    allowed = set(string.ascii_letters + string.digits + "_-.@")
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= allowed:
        raise LabelError(422, f"{what}: 1–64 letters, digits or _ - . @")
    return name


def create_user(db: Session, name: str, password: str, role: str = "annotator") -> tuple[User, str]:
    """A new account and its API token (shown once; only its hash is stored)."""
    _check_name(name, "name")
    if role not in ROLES:
        raise LabelError(422, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(password, str) or len(password) < 8:
        raise LabelError(422, "password: at least 8 characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise LabelError(409, f"user {name!r} exists")
    token = new_token()
    user = User(name=name, role=role, password_hash=hash_password(password))
    user.token_hash = token_hash(token)
    db.add(user)
    db.commit()
    return user, token


def rotate_token(db: Session, user: User) -> str:
    token = new_token()
    user.token_hash = token_hash(token)
    db.commit()
    return token


def login(db: Session, name: str, password: str) -> User:
    user = db.scalar(select(User).where(User.name == name))
    if user is None or not check_password(user.password_hash, password):
        raise LabelError(401, "wrong name or password")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        db.commit()
    return user


def user_by_token(db: Session, token: str) -> User | None:
    return db.scalar(select(User).where(User.token_hash == token_hash(token)))


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.id)))


def user_by_name(db: Session, name: str) -> User:
    user = db.scalar(select(User).where(User.name == name))
    if user is None:
        raise LabelError(404, f"no user {name!r}")
    return user


# ---------------------------------------------------------------------------- projects


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
) -> Project:
    if not isinstance(name, str) or not 1 <= len(name) <= 128 or not name.strip():
        raise LabelError(422, "name: 1–128 characters")
    if kind not in KINDS:
        raise LabelError(422, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if mode not in MODES:
        raise LabelError(422, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(overlap, int) or not 1 <= overlap <= 20:
        raise LabelError(422, "overlap: annotators per item, 1–20")
    if kind == "chat" and not policy_a:
        raise LabelError(422, "a chat project needs policy_a (a model folder)")
    if db.scalar(select(Project).where(Project.name == name)) is not None:
        raise LabelError(409, f"project {name!r} exists")
    settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
    if policy_a:
        settings["policy_a"] = policy_a
        settings["policy_b"] = policy_b or policy_a
    project = Project(
        name=name,
        kind=kind,
        mode=mode,
        overlap=overlap,
        guidelines=guidelines if guidelines else GUIDELINES[mode],
        settings=settings,
    )
    db.add(project)
    db.commit()
    return project


def get_project(db: Session, ref: int | str) -> Project:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        project = db.get(Project, int(ref))
    else:
        project = db.scalar(select(Project).where(Project.name == ref))
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


# ---------------------------------------------------------------------------- import


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LabelError(422, f"{field}: expected non-empty text")
    if len(value) > MAX_TEXT:
        raise LabelError(422, f"{field}: longer than {MAX_TEXT} characters")
    return value


def parse_prompt(value: Any, field: str = "prompt") -> list[dict[str, str]]:
    """A prompt as a messages list: text is one user turn; a list must alternate user and
    assistant turns (an optional system turn first) and end with the user's."""
    if isinstance(value, str):
        return [{"role": "user", "content": _text(value, field)}]
    if not isinstance(value, list) or not value:
        raise LabelError(422, f"{field}: expected text or a non-empty list of messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise LabelError(
                422, f"{field}[{i}]: expected {{role: user|assistant|system, content}}"
            )
        messages.append(
            {"role": m["role"], "content": _text(m.get("content"), f"{field}[{i}].content")}
        )
    if messages[-1]["role"] != "user":
        raise LabelError(422, f"{field}: the last message must be the user's")
    return messages


def parse_item(row: Any, kind: str, where: str) -> dict[str, Any]:
    """One import row → item fields. Candidates come from `responses` (a list) or from
    `chosen` and `rejected` (what `rlhfkit sim collect` writes; shown in random order, so which
    was chosen before is not revealed); `gold` is the best candidate's index or a best-first
    list; `assign_to` names the annotators; `id` and `meta` are kept."""
    if not isinstance(row, dict):
        raise LabelError(422, f"{where}: expected a JSON object")
    prompt = parse_prompt(row.get("prompt"), f"{where}: prompt")
    if "responses" in row:
        raw = row["responses"]
        if not isinstance(raw, list):
            raise LabelError(422, f"{where}: responses: expected a list")
        candidates = [_text(r, f"{where}: responses[{i}]") for i, r in enumerate(raw)]
    elif "chosen" in row or "rejected" in row:
        candidates = [_text(row.get(k), f"{where}: {k}") for k in ("chosen", "rejected")]
    else:
        raise LabelError(422, f"{where}: give `responses` or `chosen` and `rejected`")
    if kind == "pairwise" and len(candidates) != 2:
        raise LabelError(422, f"{where}: a pairwise item needs 2 replies, got {len(candidates)}")
    if not 2 <= len(candidates) <= MAX_CANDIDATES:
        raise LabelError(422, f"{where}: 2–{MAX_CANDIDATES} replies, got {len(candidates)}")
    gold = row.get("gold")
    if gold is not None:
        gold = [gold] if isinstance(gold, int) and not isinstance(gold, bool) else gold
        if (
            not isinstance(gold, list)
            or not gold
            or len(set(gold)) != len(gold)
            or not all(isinstance(g, int) and 0 <= g < len(candidates) for g in gold)
        ):
            raise LabelError(422, f"{where}: gold: a candidate index or a best-first list of them")
    assign_to = row.get("assign_to")
    if assign_to is not None and (
        not isinstance(assign_to, list) or not all(isinstance(a, str) for a in assign_to)
    ):
        raise LabelError(422, f"{where}: assign_to: a list of user names")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise LabelError(422, f"{where}: meta: expected an object")
    external_id = row.get("id")
    return {
        "prompt": prompt,
        "candidates": candidates,
        "gold": gold,
        "meta": meta,
        "external_id": None if external_id is None else str(external_id)[:128],
        "assign_to": assign_to,
    }


def read_items_file(text: str, kind: str, name: str = "file") -> list[dict[str, Any]]:
    """Rows of a JSONL file (or one JSON list), each checked with `parse_item`; a bad row
    stops the import with its line number."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError(422, f"{name}: not valid JSON ({e.msg})") from None
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
    missing = named - users.keys()
    if missing:
        raise LabelError(422, f"assign_to names unknown users: {', '.join(sorted(missing))}")
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
            db.add(_assignment(item, users[name]))
    _assign(db, project, [it for it, r in zip(items, rows, strict=True) if not r["assign_to"]])
    db.commit()
    return items


def _assignment(item: Item, user: User) -> Assignment:
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
            db.add(_assignment(item, user))
            load[user.id] += 1


# ---------------------------------------------------------------------------- tasks


def _labels(n: int) -> list[str]:
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
    task = db.get(Assignment, assignment_id)
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
    letters = _labels(len(task.display_order))
    return {
        "task": task.id,
        "project": project.name,
        "project_id": project.id,
        "kind": "ranking" if project.kind == "ranking" else "pairwise",
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


def submit(db: Session, user: User, assignment_id: int, answer: dict[str, Any]) -> Judgment:
    """Validate and store one judgment (see the module docstring for exactly-once).

    `answer`: `choice` "A" | "B" | "tie" and `strength` 1–3 (pairwise and chat); `ranking`, the
    letters best first (ranking); optional `flags` (unsafe, pii, wrong_language) and `note`.
    """
    task = get_task(db, user, assignment_id)
    item = db.get(Item, task.item_id)
    project = db.get(Project, item.project_id)
    letters = _labels(len(task.display_order))
    to_candidate = dict(zip(letters, task.display_order, strict=True))
    choice = strength = ranking = None
    if project.kind == "ranking":
        raw = answer.get("ranking")
        if not isinstance(raw, list) or sorted(map(str, raw)) != letters:
            raise LabelError(422, f"ranking: every letter of {', '.join(letters)} once, best first")
        ranking = [to_candidate[x] for x in raw]
    else:
        raw_choice = answer.get("choice")
        if raw_choice == "tie":
            choice = None
        elif raw_choice in letters:
            choice = to_candidate[raw_choice]
            strength = answer.get("strength")
            if strength not in STRENGTHS or isinstance(strength, bool):
                raise LabelError(422, "strength: 1 (slightly), 2 (better) or 3 (much better)")
        else:
            raise LabelError(422, f"choice: one of {', '.join(letters)} or 'tie'")
    flags = answer.get("flags") or []
    if not isinstance(flags, list) or not set(flags) <= set(FLAGS):
        raise LabelError(422, f"flags: a list of {', '.join(FLAGS)}")
    note = answer.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_TEXT:
        raise LabelError(422, f"note: text of at most {MAX_TEXT} characters")
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
        choice=choice,
        strength=strength,
        ranking=ranking,
        flags=sorted(set(flags)),
        note=note,
        seconds=(now() - served).total_seconds() if served else None,
    )
    db.add(judgment)
    if item.chat_id is not None:
        chat = db.get(Chat, item.chat_id, populate_existing=True)  # read under the write lock
        picked = choice if choice is not None else task.display_order[0]
        chat.messages = [*chat.messages, {"role": "assistant", "content": item.candidates[picked]}]
        chat.status, chat.item_id = "human", None
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise LabelError(409, f"task {task.id} is already answered") from None
    return judgment


# ---------------------------------------------------------------------------- chats


def create_chat(db: Session, user: User, project: Project) -> Chat:
    if project.kind != "chat":
        raise LabelError(422, f"project {project.name!r} is not a chat project")
    chat = Chat(project_id=project.id, user_id=user.id, messages=[], status="human", error="")
    db.add(chat)
    db.commit()
    return chat


def chats_of(db: Session, user: User, project: Project) -> list[Chat]:
    q = select(Chat).where(Chat.user_id == user.id, Chat.project_id == project.id)
    return list(db.scalars(q.order_by(Chat.id)))


def get_chat(db: Session, user: User, chat_id: int) -> Chat:
    chat = db.get(Chat, chat_id)
    if chat is None or chat.user_id != user.id:
        raise LabelError(404, f"no chat {chat_id} for you")
    return chat


def add_human_turn(db: Session, chat: Chat, text: Any) -> None:
    """Append the annotator's message; the caller then starts generation."""
    if chat.status not in ("human", "error"):
        raise LabelError(409, f"chat {chat.id} is {chat.status}, not waiting for your message")
    text = _text(text, "text")
    chat.messages = [*chat.messages, {"role": "user", "content": text}]
    chat.status, chat.error = "generating", ""
    db.commit()


def add_candidates(db: Session, chat_id: int, replies: Sequence[str]) -> Item:
    """Store two generated replies as an item assigned to the chat's annotator."""
    chat = db.get(Chat, chat_id)
    project = db.get(Project, chat.project_id)
    position = db.scalar(select(func.max(Item.position)).where(Item.project_id == project.id))
    item = Item(
        project_id=project.id,
        position=0 if position is None else position + 1,
        prompt=list(chat.messages),
        candidates=list(replies),
        gold=None,
        meta={"chat": chat.id, "turn": sum(m["role"] == "user" for m in chat.messages)},
        chat_id=chat.id,
    )
    db.add(item)
    db.flush()
    user = db.get(User, chat.user_id)
    task = _assignment(item, user)
    db.add(task)
    db.flush()
    chat.status, chat.item_id = "choosing", item.id
    db.commit()
    return item


def chat_failed(db: Session, chat_id: int, message: str) -> None:
    chat = db.get(Chat, chat_id)
    chat.status, chat.error = "error", message[:2000]
    chat.messages = (
        chat.messages[:-1]
        if chat.messages and chat.messages[-1]["role"] == "user"
        else chat.messages
    )
    db.commit()


def chat_view(db: Session, chat: Chat) -> dict[str, Any]:
    project = db.get(Project, chat.project_id)
    view: dict[str, Any] = {
        "chat": chat.id,
        "project": project.name,
        "project_id": project.id,
        "mode": project.mode,
        "guidelines": project.guidelines,
        "status": chat.status,
        "error": chat.error,
        "messages": chat.messages,
        "task": None,
    }
    if chat.status == "choosing" and chat.item_id is not None:
        task = db.scalar(select(Assignment).where(Assignment.item_id == chat.item_id))
        view["task"] = task_view(db, task)
    return view


# ---------------------------------------------------------------------------- statistics


def _judgments(db: Session, project: Project) -> list[tuple[Judgment, Item, User]]:
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
    rows = _judgments(db, project)
    for j, item, user in rows:
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
    return {
        "project": project.name,
        "kind": project.kind,
        "mode": project.mode,
        "overlap": project.overlap,
        "items": n_items,
        "tasks_open": status_counts.get("open", 0),
        "tasks_done": status_counts.get("done", 0),
        "judgments": len(rows),
        "ties": sum(j.choice is None and j.ranking is None for j, _, _ in rows),
        "flags": dict(flags),
        "median_seconds": all_seconds[len(all_seconds) // 2] if all_seconds else None,
        "notes": notes,
        **table,
    }


# ---------------------------------------------------------------------------- export

EXPORT_FORMATS = ("pairs", "ranked", "hh")


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
    db: Session, project: Project, format: str = "pairs", ties: str = "drop"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows of the trainer format, report: who labelled what and the agreement table).

    pairs: {prompt, chosen, rejected, margin (the strength; for a ranking, the difference of
    places), meta}, a ranking expanded into its K(K−1)/2 pairs; ranked: {prompt, responses best
    first, meta}; hh: {chosen, rejected} HH transcripts. `ties`: "drop" or "keep" (pairs only:
    kept as margin 0 with `meta.tie`, in the order shown).
    """
    if format not in EXPORT_FORMATS:
        raise LabelError(422, f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if ties not in ("drop", "keep"):
        raise LabelError(422, f"ties must be 'drop' or 'keep', got {ties!r}")
    red_team = project.mode == "red_team"
    rows: list[dict[str, Any]] = []
    who: list[dict[str, Any]] = []
    for j, item, user in _judgments(db, project):
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
