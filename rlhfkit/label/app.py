"""The web app: server-rendered pages for people and a JSON API (under /api, documented at /docs)
for scripts, both thin layers over `rlhfkit.label.service`.

- Authentication: a signed session cookie (pages, and the API from a browser) or
  `Authorization: Bearer <token>` (scripts). Every state-changing request needs one; with the
  cookie it also needs the CSRF token (form field `csrf_token` or header `X-CSRF-Token`), see
  `rlhfkit.label.security`. Missing authentication is 401, a missing or wrong CSRF token 403.
- Output escaping: Jinja2 autoescaping is on for every template, and no template marks user
  text `|safe`; JSON responses are JSON. Pages send a Content-Security-Policy that allows only
  the app's own scripts and styles, so an injected <script> would not run even if it got through.
- Errors: a `LabelError` becomes its status with `{"detail": message}`; FastAPI's own request
  validation (malformed JSON, missing or mistyped fields) answers 422 naming the field.
- Every asset (CSS, the small JS file) is served by the app from `rlhfkit/label/static`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfkit import __version__
from rlhfkit.label import service
from rlhfkit.label.chat import ChatWorker
from rlhfkit.label.db import Database, User
from rlhfkit.label.security import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Signer, same_token
from rlhfkit.label.service import LabelError

HERE = Path(__file__).parent
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


# ---------------------------------------------------------------------------- API bodies


class LoginBody(BaseModel):
    name: str
    password: str


class UserBody(BaseModel):
    name: str
    password: str
    role: Literal["annotator", "admin"] = "annotator"


class ProjectBody(BaseModel):
    name: str
    kind: Literal["pairwise", "ranking", "chat"]
    mode: Literal["helpful", "red_team"] = "helpful"
    overlap: int = Field(1, ge=1, le=20, description="annotators per item")
    guidelines: str | None = Field(None, description="shown beside every task; default per mode")
    policy_a: str | None = Field(None, description="chat: model folder for reply A")
    policy_b: str | None = Field(None, description="chat: model folder for reply B (default A)")
    max_new_tokens: int = Field(48, ge=1, le=1024)
    temperature: float = Field(1.0, gt=0, le=10)


class ItemsBody(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="rows as in an import file: prompt, responses | chosen+rejected, "
        "optional gold, id, meta, assign_to"
    )


class JudgmentBody(BaseModel):
    choice: str | None = Field(None, description="pairwise/chat: a letter (A, B) or 'tie'")
    strength: StrictInt | None = Field(None, description="1 slightly, 2 better, 3 much better")
    ranking: list[str] | None = Field(None, description="ranking: every letter once, best first")
    flags: list[str] = Field(default_factory=list, description="unsafe, pii, wrong_language")
    note: str = ""


class MessageBody(BaseModel):
    text: str


# ---------------------------------------------------------------------------- dependencies


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.database.session() as db:
        yield db


DB = Annotated[Session, Depends(get_db)]


def identify(request: Request, db: DB) -> User | None:
    """The user behind the request (token or cookie), remembering which it was."""
    request.state.csrf = None
    request.state.via = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        request.state.via = "token"
        return service.user_by_token(db, auth[7:].strip())
    session = request.app.state.signer.read_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    request.state.via, request.state.csrf = "cookie", session["csrf"]
    return db.get(User, session["uid"])


Who = Annotated[User | None, Depends(identify)]


def reader(user: Who) -> User:
    if user is None:
        raise LabelError(401, "log in, or send Authorization: Bearer <token>")
    return user


def writer(request: Request, user: Annotated[User, Depends(reader)]) -> User:
    if request.state.via == "cookie" and not same_token(
        request.state.csrf, request.headers.get("x-csrf-token")
    ):
        raise LabelError(403, "missing or wrong CSRF token (header X-CSRF-Token)")
    return user


def admin_reader(user: Annotated[User, Depends(reader)]) -> User:
    if user.role != "admin":
        raise LabelError(403, "admins only")
    return user


def admin_writer(user: Annotated[User, Depends(writer)]) -> User:
    if user.role != "admin":
        raise LabelError(403, "admins only")
    return user


Reader = Annotated[User, Depends(reader)]
Writer = Annotated[User, Depends(writer)]
AdminReader = Annotated[User, Depends(admin_reader)]
AdminWriter = Annotated[User, Depends(admin_writer)]


# ---------------------------------------------------------------------------- the app


def create_app(database: Database | str) -> FastAPI:
    """The app for `database` (a `Database` or a URL), whose schema must be at head."""
    database = Database(database) if isinstance(database, str) else database
    with database.session() as db:
        signer = Signer(service.secret_key(db))
    worker = ChatWorker(database)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    app = FastAPI(
        lifespan=lifespan,
        title="rlhfkit label",
        version=__version__,
        description="Human feedback collection: pairwise, ranking and live chat comparisons.",
    )
    app.state.database, app.state.signer, app.state.worker = database, signer, worker
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.autoescape = True
    templates.env.globals["strengths"] = service.STRENGTHS

    def wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api") and request.url.path not in (
            "/docs",
            "/openapi.json",
        )

    @app.exception_handler(LabelError)
    def _label_error(request: Request, exc: LabelError) -> Any:
        if wants_html(request):
            if exc.status == 401:
                return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
            return page(
                request, "message.html", {"title": "Error", "message": exc.message}, exc.status
            )
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Any:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        if wants_html(request):
            return page(request, "message.html", {"title": "Error", "message": problems}, 422)
        return JSONResponse(
            {"detail": problems, "errors": _jsonable(exc.errors())}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if wants_html(request):
            return page(
                request,
                "message.html",
                {"title": "Error", "message": str(exc.detail)},
                exc.status_code,
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    def page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Any:
        user = getattr(request.state, "user", None)
        csrf = getattr(request.state, "csrf", None)
        fresh = None
        if csrf is None:  # a visitor: the pre-login token, from its cookie or new
            csrf = signer.read_anonymous_csrf(request.cookies.get(CSRF_COOKIE))
            if csrf is None:
                fresh, csrf = signer.anonymous_csrf()
        response = templates.TemplateResponse(
            request, template, {"user": user, "csrf": csrf, **context}, status_code=status
        )
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if fresh is not None:
            response.set_cookie(
                CSRF_COOKIE, fresh, httponly=True, samesite="lax", max_age=SESSION_SECONDS
            )
        return response

    def page_user(request: Request, user: User | None) -> User:
        if user is None:
            raise LabelError(401, "log in first")
        request.state.user = user
        return user

    def check_form_csrf(request: Request, token: str) -> None:
        if request.state.via == "token":
            return
        if not same_token(request.state.csrf, token):
            raise LabelError(403, "missing or wrong CSRF token; reload the page and try again")

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request, db: DB, who: Who) -> Any:
        user = page_user(request, who)
        projects = service.projects_for(db, user)
        chats = {p.id: service.chats_of(db, user, p) for p, _, _ in projects if p.kind == "chat"}
        return page(request, "index.html", {"projects": projects, "chats": chats})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Any:
        return page(request, "login.html", {"next": _local(next), "error": None})

    @app.post("/login", include_in_schema=False)
    def login_form(
        request: Request,
        db: DB,
        name: Annotated[str, Form()],
        password: Annotated[str, Form()],
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Any:
        expected = signer.read_anonymous_csrf(request.cookies.get(CSRF_COOKIE))
        if not same_token(expected, csrf_token):
            raise LabelError(403, "missing or wrong CSRF token; reload the login page")
        try:
            user = service.login(db, name, password)
        except LabelError as e:
            return page(request, "login.html", {"next": _local(next), "error": e.message}, 401)
        response = RedirectResponse(_local(next), status_code=303)
        _set_session(response, signer.session(user.id)[0])
        response.delete_cookie(CSRF_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout_form(request: Request, who: Who, csrf_token: Annotated[str, Form()] = "") -> Any:
        page_user(request, who)
        check_form_csrf(request, csrf_token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/projects/{pid}", response_class=HTMLResponse, include_in_schema=False)
    def project_page(request: Request, pid: int, db: DB, who: Who) -> Any:
        user = page_user(request, who)
        project = service.get_project(db, pid)
        if project.kind == "chat":
            return RedirectResponse("/", status_code=303)
        task = service.next_task(db, user, project)
        if task is None:
            return page(
                request,
                "message.html",
                {
                    "title": project.name,
                    "message": "No open tasks left in this project. Thank you!",
                },
            )
        return RedirectResponse(f"/tasks/{task.id}", status_code=303)

    @app.get("/tasks/{aid}", response_class=HTMLResponse, include_in_schema=False)
    def task_page(request: Request, aid: int, db: DB, who: Who) -> Any:
        user = page_user(request, who)
        view = service.task_view(db, service.get_task(db, user, aid))
        if view["chat"] is not None:
            return RedirectResponse(f"/chats/{view['chat']}", status_code=303)
        return page(request, "task.html", {"t": view, "flags": service.FLAGS})

    @app.post("/tasks/{aid}", include_in_schema=False)
    def task_form(
        request: Request,
        aid: int,
        db: DB,
        who: Who,
        csrf_token: Annotated[str, Form()] = "",
        verdict: Annotated[str, Form()] = "",
        note: Annotated[str, Form()] = "",
        flags: Annotated[list[str] | None, Form()] = None,
    ) -> Any:
        user = page_user(request, who)
        check_form_csrf(request, csrf_token)
        task = service.get_task(db, user, aid)
        answer: dict[str, Any] = {"flags": flags or [], "note": note}
        form = _form_fields(request)
        if verdict == "tie":
            answer["choice"] = "tie"
        elif len(verdict) == 2 and verdict[1] in "123":
            answer["choice"], answer["strength"] = verdict[0], int(verdict[1])
        ranks = {k[5:]: v for k, v in form.items() if k.startswith("rank_")}
        if ranks:
            try:
                answer["ranking"] = sorted(ranks, key=lambda letter: int(ranks[letter]))
            except ValueError:
                raise LabelError(422, "ranking: give each reply a number, 1 = best") from None
            if sorted(int(v) for v in ranks.values()) != list(range(1, len(ranks) + 1)):
                raise LabelError(422, f"ranking: use each number 1–{len(ranks)} once")
        view = service.task_view(db, task, mark_served=False)
        service.submit(db, user, aid, answer)
        if view["chat"] is not None:
            return RedirectResponse(f"/chats/{view['chat']}", status_code=303)
        return RedirectResponse(f"/projects/{view['project_id']}", status_code=303)

    @app.post("/projects/{pid}/chats", include_in_schema=False)
    def new_chat_form(
        request: Request, pid: int, db: DB, who: Who, csrf_token: Annotated[str, Form()] = ""
    ) -> Any:
        user = page_user(request, who)
        check_form_csrf(request, csrf_token)
        chat = service.create_chat(db, user, service.get_project(db, pid))
        return RedirectResponse(f"/chats/{chat.id}", status_code=303)

    @app.get("/chats/{cid}", response_class=HTMLResponse, include_in_schema=False)
    def chat_page(request: Request, cid: int, db: DB, who: Who) -> Any:
        user = page_user(request, who)
        view = service.chat_view(db, service.get_chat(db, user, cid))
        return page(request, "chat.html", {"c": view, "t": view["task"], "flags": service.FLAGS})

    @app.post("/chats/{cid}", include_in_schema=False)
    def chat_form(
        request: Request,
        cid: int,
        db: DB,
        who: Who,
        text: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Any:
        user = page_user(request, who)
        check_form_csrf(request, csrf_token)
        chat = service.get_chat(db, user, cid)
        service.add_human_turn(db, chat, text)
        worker.start(chat.id)
        return RedirectResponse(f"/chats/{cid}", status_code=303)

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_page(request: Request, db: DB, who: Who) -> Any:
        user = _page_admin(request, who)
        return page(
            request,
            "admin.html",
            {
                "users": service.list_users(db),
                "projects": service.projects_for(db, user),
                "kinds": service.KINDS,
                "modes": service.MODES,
                "new_token": None,
            },
        )

    def _page_admin(request: Request, who: User | None) -> User:
        user = page_user(request, who)
        if user.role != "admin":
            raise LabelError(403, "admins only")
        return user

    @app.post("/admin/users", include_in_schema=False)
    def admin_users_form(
        request: Request,
        db: DB,
        who: Who,
        name: Annotated[str, Form()],
        password: Annotated[str, Form()],
        role: Annotated[str, Form()] = "annotator",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Any:
        user = _page_admin(request, who)
        check_form_csrf(request, csrf_token)
        created, token = service.create_user(db, name, password, role)
        return page(
            request,
            "admin.html",
            {
                "users": service.list_users(db),
                "projects": service.projects_for(db, user),
                "kinds": service.KINDS,
                "modes": service.MODES,
                "new_token": (created.name, token),
            },
        )

    @app.post("/admin/projects", include_in_schema=False)
    def admin_projects_form(
        request: Request,
        db: DB,
        who: Who,
        name: Annotated[str, Form()],
        kind: Annotated[str, Form()],
        mode: Annotated[str, Form()] = "helpful",
        overlap: Annotated[int, Form()] = 1,
        guidelines: Annotated[str, Form()] = "",
        policy_a: Annotated[str, Form()] = "",
        policy_b: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Any:
        _page_admin(request, who)
        check_form_csrf(request, csrf_token)
        project = service.create_project(
            db, name, kind, mode, overlap, guidelines or None, policy_a or None, policy_b or None
        )
        return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)

    @app.get("/admin/projects/{pid}", response_class=HTMLResponse, include_in_schema=False)
    def admin_project_page(request: Request, pid: int, db: DB, who: Who) -> Any:
        _page_admin(request, who)
        project = service.get_project(db, pid)
        return page(request, "project.html", {"p": project, "s": service.stats(db, project)})

    @app.post("/admin/projects/{pid}/import", include_in_schema=False)
    def admin_import_form(
        request: Request,
        pid: int,
        db: DB,
        who: Who,
        file: Annotated[UploadFile, File()],
        csrf_token: Annotated[str, Form()] = "",
    ) -> Any:
        _page_admin(request, who)
        check_form_csrf(request, csrf_token)
        project = service.get_project(db, pid)
        try:
            text = file.file.read().decode("utf-8")
        except UnicodeDecodeError:
            raise LabelError(422, f"{file.filename}: not UTF-8 text") from None
        rows = service.read_items_file(text, project.kind, file.filename or "upload")
        service.import_items(db, project, rows)
        return RedirectResponse(f"/admin/projects/{pid}", status_code=303)

    @app.get("/admin/projects/{pid}/export", include_in_schema=False)
    def admin_export(
        request: Request, pid: int, db: DB, who: Who, format: str = "pairs", ties: str = "drop"
    ) -> Any:
        _page_admin(request, who)
        project = service.get_project(db, pid)
        rows, _ = service.export_rows(db, project, format, ties)
        name = f"{project.id}-{format}.jsonl"
        return PlainTextResponse(
            service.write_jsonl(rows),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # ------------------------------------------------------------------ JSON API

    @app.post("/api/session", tags=["accounts"])
    def api_login(body: LoginBody, db: DB) -> JSONResponse:
        """Log in with name and password: sets the session cookie and returns the CSRF token
        that every later cookie-authenticated write must send as X-CSRF-Token."""
        user = service.login(db, body.name, body.password)
        cookie, csrf = signer.session(user.id)
        response = JSONResponse({"name": user.name, "role": user.role, "csrf_token": csrf})
        _set_session(response, cookie)
        return response

    @app.delete("/api/session", tags=["accounts"])
    def api_logout(user: Writer) -> JSONResponse:
        """Log out (clears the session cookie)."""
        response = JSONResponse({"logged_out": user.name})
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/api/me", tags=["accounts"])
    def api_me(user: Reader) -> dict[str, Any]:
        return {"id": user.id, "name": user.name, "role": user.role}

    @app.post("/api/me/token", tags=["accounts"])
    def api_rotate_token(user: Writer, db: DB) -> dict[str, Any]:
        """A new API token for yourself (the old one stops working)."""
        return {"name": user.name, "api_token": service.rotate_token(db, user)}

    @app.get("/api/users", tags=["accounts"])
    def api_users(_: AdminReader, db: DB) -> list[dict[str, Any]]:
        return [{"id": u.id, "name": u.name, "role": u.role} for u in service.list_users(db)]

    @app.post("/api/users", tags=["accounts"], status_code=201)
    def api_create_user(body: UserBody, _: AdminWriter, db: DB) -> dict[str, Any]:
        """Create an account; the answer holds its API token, shown only this once."""
        user, token = service.create_user(db, body.name, body.password, body.role)
        return {"id": user.id, "name": user.name, "role": user.role, "api_token": token}

    @app.post("/api/users/{name}/token", tags=["accounts"])
    def api_user_token(name: str, _: AdminWriter, db: DB) -> dict[str, Any]:
        """A new API token for an account (the old one stops working); for scripted clients."""
        return {"name": name, "api_token": service.rotate_token(db, service.user_by_name(db, name))}

    @app.get("/api/projects", tags=["projects"])
    def api_projects(user: Reader, db: DB) -> list[dict[str, Any]]:
        """Projects you have tasks in (all of them for an admin), with your open/done counts."""
        return [
            {**_project_json(p), "open": n_open, "done": n_done}
            for p, n_open, n_done in service.projects_for(db, user)
        ]

    @app.post("/api/projects", tags=["projects"], status_code=201)
    def api_create_project(body: ProjectBody, _: AdminWriter, db: DB) -> dict[str, Any]:
        project = service.create_project(db, **body.model_dump())
        return _project_json(project)

    @app.get("/api/projects/{pid}", tags=["projects"])
    def api_project(pid: int, _: Reader, db: DB) -> dict[str, Any]:
        return _project_json(service.get_project(db, pid))

    @app.post("/api/projects/{pid}/items", tags=["projects"], status_code=201)
    def api_import(pid: int, body: ItemsBody, _: AdminWriter, db: DB) -> dict[str, Any]:
        """Add items (all or none) and assign each to `overlap` annotators."""
        project = service.get_project(db, pid)
        rows = [
            service.parse_item(r, project.kind, f"items[{i}]") for i, r in enumerate(body.items)
        ]
        items = service.import_items(db, project, rows)
        return {"project": project.name, "items": [it.id for it in items]}

    @app.get("/api/projects/{pid}/stats", tags=["quality"])
    def api_stats(pid: int, _: AdminReader, db: DB) -> dict[str, Any]:
        """Agreement (pairwise, Cohen's κ per annotator pair, Krippendorff's α), gold agreement,
        time per judgment."""
        return service.stats(db, service.get_project(db, pid))

    @app.get("/api/projects/{pid}/export", tags=["quality"])
    def api_export(
        pid: int,
        _: AdminReader,
        db: DB,
        format: Literal["pairs", "ranked", "hh"] = "pairs",
        ties: Literal["drop", "keep"] = "drop",
    ) -> dict[str, Any]:
        """Rows in a trainer format, and the report (who labelled what, agreement)."""
        rows, report = service.export_rows(db, service.get_project(db, pid), format, ties)
        return {"rows": rows, "report": report}

    @app.get("/api/projects/{pid}/next", tags=["tasks"])
    def api_next(pid: int, user: Reader, db: DB) -> dict[str, Any]:
        """Your next open task in the project (`task` is null when none is left)."""
        task = service.next_task(db, user, service.get_project(db, pid))
        return {"task": None if task is None else service.task_view(db, task)}

    @app.get("/api/tasks", tags=["tasks"])
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

    @app.get("/api/tasks/{aid}", tags=["tasks"])
    def api_task(aid: int, user: Reader, db: DB) -> dict[str, Any]:
        """One of your tasks: the prompt and the candidates in the order shown to you."""
        return service.task_view(db, service.get_task(db, user, aid))

    @app.post("/api/tasks/{aid}/judgment", tags=["tasks"], status_code=201)
    def api_judge(aid: int, body: JudgmentBody, user: Writer, db: DB) -> dict[str, Any]:
        """Answer a task once: `choice` + `strength` (pairwise, chat) or `ranking` (ranking)."""
        j = service.submit(db, user, aid, body.model_dump(exclude_none=True))
        return {"judgment": j.id, "task": aid}

    @app.post("/api/projects/{pid}/chats", tags=["chat"], status_code=201)
    def api_new_chat(pid: int, user: Writer, db: DB) -> dict[str, Any]:
        chat = service.create_chat(db, user, service.get_project(db, pid))
        return service.chat_view(db, chat)

    @app.get("/api/chats/{cid}", tags=["chat"])
    def api_chat(cid: int, user: Reader, db: DB) -> dict[str, Any]:
        """The dialogue so far; when `status` is "choosing", `task` holds the two replies."""
        return service.chat_view(db, service.get_chat(db, user, cid))

    @app.post("/api/chats/{cid}/messages", tags=["chat"], status_code=202)
    def api_chat_message(cid: int, body: MessageBody, user: Writer, db: DB) -> dict[str, Any]:
        """Your next message; two replies are generated in the background (poll the chat)."""
        chat = service.get_chat(db, user, cid)
        service.add_human_turn(db, chat, body.text)
        worker.start(chat.id)
        return service.chat_view(db, chat)

    @app.get("/api/health", tags=["server"])
    def api_health(db: DB) -> dict[str, Any]:
        db.execute(text("SELECT 1"))
        return {"ok": True, "version": __version__}

    return app


def _form_fields(request: Request) -> dict[str, str]:
    """The parsed form of a request whose handler declared Form parameters (FastAPI keeps it)."""
    form = getattr(request, "_form", None)
    return {k: v for k, v in (form or {}).items() if isinstance(v, str)}


def _set_session(response: Any, cookie: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, cookie, httponly=True, samesite="lax", max_age=SESSION_SECONDS
    )


def _local(path: str) -> str:
    """Only same-site redirects after login (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def _project_json(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "mode": p.mode,
        "overlap": p.overlap,
        "guidelines": p.guidelines,
        "settings": p.settings,
    }


def _jsonable(errors: Any) -> Any:
    return json.loads(json.dumps(errors, default=str))
