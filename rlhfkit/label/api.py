"""The JSON API under /api (documented at /docs): what scripts, `rlhfkit.label.client` and the
simulated annotators call. Bodies are pydantic models, so a malformed body answers 422 naming
the field; every write needs `auth.Writer` (CSRF with the cookie, none with a token).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr
from sqlalchemy import text

from rlhfkit import __version__
from rlhfkit.label import service
from rlhfkit.label.auth import DB, Admin, Reader, Writer
from rlhfkit.label.pages import set_session
from rlhfkit.label.security import SESSION_COOKIE

router = APIRouter(prefix="/api")


# ---------------------------------------------------------------------------- bodies


class LoginBody(BaseModel):
    name: str
    password: str


class UserBody(BaseModel):
    name: str
    password: str
    role: Literal["annotator", "admin"] = "annotator"


class ProjectBody(BaseModel):
    name: str
    kind: Literal["pairwise", "ranking", "chat", "rating"]
    mode: Literal["helpful", "red_team"] = "helpful"
    overlap: int = Field(1, ge=1, le=20, description="annotators per item")
    guidelines: str | None = Field(None, description="shown beside every task; default per mode")
    policy_a: str | None = Field(None, description="chat: model folder for reply A")
    policy_b: str | None = Field(None, description="chat: model folder for reply B (default A)")
    max_new_tokens: int = Field(48, ge=1, le=1024)
    temperature: float = Field(1.0, gt=0, le=10)
    scale: Literal["thumbs", "1-5", "1-7"] = Field("thumbs", description="rating: the scale")
    aspects: list[str] | None = Field(
        None, description='rating: aspect names, each optionally with its scale ("honest:1-5")'
    )


class ItemsBody(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="rows as in an import file: prompt, responses | chosen+rejected, "
        "optional gold, id, meta, assign_to"
    )


class JudgmentBody(BaseModel):
    choice: str | None = Field(None, description="pairwise/chat: a letter (A, B) or 'tie'")
    strength: StrictInt | None = Field(None, description="1 slightly, 2 better, 3 much better")
    ranking: list[str] | None = Field(None, description="ranking: every letter once, best first")
    scores: dict[str, StrictInt | StrictStr] | None = Field(
        None, description='rating: {aspect: "up" | "down" (thumbs) or a number (Likert)}'
    )
    flags: list[str] = Field(default_factory=list, description="unsafe, pii, wrong_language")
    note: str = ""


class MessageBody(BaseModel):
    text: str


def project_json(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "mode": p.mode,
        "overlap": p.overlap,
        "guidelines": p.guidelines,
        "settings": p.settings,
    }


# ---------------------------------------------------------------------------- accounts


@router.post("/session", tags=["accounts"])
def api_login(request: Request, body: LoginBody, db: DB) -> JSONResponse:
    """Log in with name and password: sets the session cookie and returns the CSRF token
    that every later cookie-authenticated write must send as X-CSRF-Token."""
    user = service.login(db, body.name, body.password)
    cookie, csrf = request.app.state.signer.session(user.id)
    response = JSONResponse({"name": user.name, "role": user.role, "csrf_token": csrf})
    set_session(response, cookie)
    return response


@router.delete("/session", tags=["accounts"])
def api_logout(user: Writer) -> JSONResponse:
    """Log out (clears the session cookie)."""
    response = JSONResponse({"logged_out": user.name})
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/me", tags=["accounts"])
def api_me(user: Reader) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role}


@router.post("/me/token", tags=["accounts"])
def api_rotate_token(user: Writer, db: DB) -> dict[str, Any]:
    """A new API token for yourself (the old one stops working)."""
    return {"name": user.name, "api_token": service.rotate_token(db, user)}


@router.get("/users", tags=["accounts"])
def api_users(_: Admin, db: DB) -> list[dict[str, Any]]:
    return [{"id": u.id, "name": u.name, "role": u.role} for u in service.list_users(db)]


@router.post("/users", tags=["accounts"], status_code=201)
def api_create_user(body: UserBody, _: Writer, __: Admin, db: DB) -> dict[str, Any]:
    """Create an account; the answer holds its API token, shown only this once."""
    user, token = service.create_user(db, body.name, body.password, body.role)
    return {"id": user.id, "name": user.name, "role": user.role, "api_token": token}


@router.post("/users/{name}/token", tags=["accounts"])
def api_user_token(name: str, _: Writer, __: Admin, db: DB) -> dict[str, Any]:
    """A new API token for an account (the old one stops working); for scripted clients."""
    return {"name": name, "api_token": service.rotate_token(db, service.user_by_name(db, name))}


# ---------------------------------------------------------------------------- projects


@router.get("/projects", tags=["projects"])
def api_projects(user: Reader, db: DB) -> list[dict[str, Any]]:
    """Projects you have tasks in (all of them for an admin), with your open/done counts."""
    return [
        {**project_json(p), "open": n_open, "done": n_done}
        for p, n_open, n_done in service.projects_for(db, user)
    ]


@router.post("/projects", tags=["projects"], status_code=201)
def api_create_project(body: ProjectBody, _: Writer, __: Admin, db: DB) -> dict[str, Any]:
    return project_json(service.create_project(db, **body.model_dump()))


@router.get("/projects/{pid}", tags=["projects"])
def api_project(pid: int, _: Reader, db: DB) -> dict[str, Any]:
    return project_json(service.get_project(db, pid))


@router.post("/projects/{pid}/items", tags=["projects"], status_code=201)
def api_import(pid: int, body: ItemsBody, _: Writer, __: Admin, db: DB) -> dict[str, Any]:
    """Add items (all or none) and assign each to `overlap` annotators."""
    project = service.get_project(db, pid)
    rows = [service.parse_item(r, project.kind, f"items[{i}]") for i, r in enumerate(body.items)]
    items = service.import_items(db, project, rows)
    return {"project": project.name, "items": [it.id for it in items]}


# ---------------------------------------------------------------------------- quality


@router.get("/projects/{pid}/stats", tags=["quality"])
def api_stats(pid: int, _: Admin, db: DB) -> dict[str, Any]:
    """Agreement (pairwise, Cohen's κ per annotator pair, Krippendorff's α), gold agreement,
    time per judgment."""
    return service.stats(db, service.get_project(db, pid))


@router.get("/projects/{pid}/export", tags=["quality"])
def api_export(
    pid: int,
    _: Admin,
    db: DB,
    format: Literal["pairs", "ranked", "hh", "ratings"] = "pairs",
    ties: Literal["drop", "keep"] = "drop",
    threshold: int | None = None,
    aspect: str | None = None,
) -> dict[str, Any]:
    """Rows in a trainer format, and the report (who labelled what, agreement). A rating
    project exports `ratings`: unpaired {prompt, completion, label, meta} rows, the label from
    `aspect` (default the first) with `threshold` (Likert: score ≥ threshold is desirable;
    default: above the middle desirable, the middle dropped)."""
    project = service.get_project(db, pid)
    rows, report = service.export_rows(db, project, format, ties, threshold, aspect)
    return {"rows": rows, "report": report}


# ---------------------------------------------------------------------------- tasks


@router.get("/projects/{pid}/next", tags=["tasks"])
def api_next(pid: int, user: Reader, db: DB) -> dict[str, Any]:
    """Your next open task in the project (`task` is null when none is left)."""
    task = service.next_task(db, user, service.get_project(db, pid))
    return {"task": None if task is None else service.task_view(db, task)}


@router.get("/tasks", tags=["tasks"])
def api_tasks(
    user: Reader,
    db: DB,
    project: int | None = None,
    status: Literal["open", "done"] | None = None,
) -> list[dict[str, Any]]:
    """Your tasks (ids and status), optionally of one project and status."""
    p = service.get_project(db, project) if project is not None else None
    return [
        {"task": t.id, "item": t.item_id, "status": t.status}
        for t in service.tasks_of(db, user, p, status)
    ]


@router.get("/tasks/{aid}", tags=["tasks"])
def api_task(aid: int, user: Reader, db: DB) -> dict[str, Any]:
    """One of your tasks: the prompt and the candidates in the order shown to you."""
    return service.task_view(db, service.get_task(db, user, aid))


@router.post("/tasks/{aid}/judgment", tags=["tasks"], status_code=201)
def api_judge(aid: int, body: JudgmentBody, user: Writer, db: DB) -> dict[str, Any]:
    """Answer a task once: `choice` + `strength` (pairwise, chat), `ranking` (ranking) or
    `scores` (rating)."""
    j = service.submit(db, user, aid, body.model_dump(exclude_none=True))
    return {"judgment": j.id, "task": aid}


# ---------------------------------------------------------------------------- chat


@router.post("/projects/{pid}/chats", tags=["chat"], status_code=201)
def api_new_chat(pid: int, user: Writer, db: DB) -> dict[str, Any]:
    chat = service.create_chat(db, user, service.get_project(db, pid))
    return service.chat_view(db, chat)


@router.get("/chats/{cid}", tags=["chat"])
def api_chat(cid: int, user: Reader, db: DB) -> dict[str, Any]:
    """The dialogue so far; when `status` is "choosing", `task` holds the two replies."""
    return service.chat_view(db, service.get_chat(db, user, cid))


@router.post("/chats/{cid}/messages", tags=["chat"], status_code=202)
def api_chat_message(
    request: Request, cid: int, body: MessageBody, user: Writer, db: DB
) -> dict[str, Any]:
    """Your next message; two replies are generated in the background (poll the chat)."""
    chat = service.get_chat(db, user, cid)
    service.add_human_turn(db, chat, body.text)
    request.app.state.worker.start(chat.id)
    return service.chat_view(db, chat)


# ---------------------------------------------------------------------------- server


@router.get("/health", tags=["server"])
def api_health(db: DB) -> dict[str, Any]:
    db.execute(text("SELECT 1"))
    return {"ok": True, "version": __version__}
