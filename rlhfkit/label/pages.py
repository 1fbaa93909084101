"""The server-rendered pages for people: login, the project list, a task, a chat, and the admin
pages (accounts, projects, import, statistics, export). Forms post back to the page's own URL
with the CSRF token in the field `csrf_token` (`auth.FormWriter`) and answer with a redirect.

Every page is rendered by `render`, which adds the page header's user and CSRF token (a
visitor's pre-login token, from its cookie or new) and the security headers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from rlhfkit.label import service
from rlhfkit.label.auth import DB, Admin, FormWriter, Reader
from rlhfkit.label.security import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, same_token
from rlhfkit.label.service import LabelError

CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

router = APIRouter(include_in_schema=False)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Any:
    """`template` with `context`, the user and the CSRF token, and the security headers."""
    signer = request.app.state.signer
    csrf = getattr(request.state, "csrf", None)
    fresh = None
    if csrf is None:  # a visitor: the pre-login token, from its cookie or new
        csrf = signer.read_anonymous_csrf(request.cookies.get(CSRF_COOKIE))
        if csrf is None:
            fresh, csrf = signer.anonymous_csrf()
    user = getattr(request.state, "user", None)
    response = request.app.state.templates.TemplateResponse(
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


def set_session(response: Any, cookie: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, cookie, httponly=True, samesite="lax", max_age=SESSION_SECONDS
    )


def local(path: str) -> str:
    """Only same-site redirects after login (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


async def form_fields(request: Request) -> dict[str, str]:
    """Every text field of the posted form (FastAPI has parsed it already; Starlette keeps the
    parsed form, so this reads it again without reading the body)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


# ---------------------------------------------------------------------------- annotators


@router.get("/", response_class=HTMLResponse)
def index(request: Request, db: DB, user: Reader) -> Any:
    projects = service.projects_for(db, user)
    chats = {p.id: service.chats_of(db, user, p) for p, _, _ in projects if p.kind == "chat"}
    return render(request, "index.html", {"projects": projects, "chats": chats})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Any:
    return render(request, "login.html", {"next": local(next), "error": None})


@router.post("/login")
def login_form(
    request: Request,
    db: DB,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Any:
    expected = request.app.state.signer.read_anonymous_csrf(request.cookies.get(CSRF_COOKIE))
    if not same_token(expected, csrf_token):
        raise LabelError(403, "missing or wrong CSRF token; reload the login page")
    try:
        user = service.login(db, name, password)
    except LabelError as e:
        return render(request, "login.html", {"next": local(next), "error": e.message}, 401)
    response = RedirectResponse(local(next), status_code=303)
    set_session(response, request.app.state.signer.session(user.id)[0])
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.post("/logout")
def logout_form(_: FormWriter) -> Any:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/projects/{pid}", response_class=HTMLResponse)
def project_page(request: Request, pid: int, db: DB, user: Reader) -> Any:
    project = service.get_project(db, pid)
    if project.kind == "chat":
        return RedirectResponse("/", status_code=303)
    task = service.next_task(db, user, project)
    if task is None:
        message = "No open tasks left in this project. Thank you!"
        return render(request, "message.html", {"title": project.name, "message": message})
    return RedirectResponse(f"/tasks/{task.id}", status_code=303)


@router.get("/tasks/{aid}", response_class=HTMLResponse)
def task_page(request: Request, aid: int, db: DB, user: Reader) -> Any:
    view = service.task_view(db, service.get_task(db, user, aid))
    if view["chat"] is not None:
        return RedirectResponse(f"/chats/{view['chat']}", status_code=303)
    return render(request, "task.html", {"t": view, "flags": service.FLAGS})


@router.post("/tasks/{aid}")
def task_form(
    aid: int,
    db: DB,
    user: FormWriter,
    form: Annotated[dict[str, str], Depends(form_fields)],
    verdict: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    flags: Annotated[list[str] | None, Form()] = None,
) -> Any:
    task = service.get_task(db, user, aid)
    answer: dict[str, Any] = {"flags": flags or [], "note": note}
    if verdict == "tie":
        answer["choice"] = "tie"
    elif len(verdict) == 2 and verdict[1] in "123":
        answer["choice"], answer["strength"] = verdict[0], int(verdict[1])
    scores = {k[6:]: v for k, v in form.items() if k.startswith("score_")}
    if scores:  # a rating: thumbs come as "up" / "down", Likert scores as digits
        answer["scores"] = {
            k: int(v) if v.isascii() and v.isdigit() else v for k, v in scores.items()
        }
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


@router.post("/projects/{pid}/chats")
def new_chat_form(pid: int, db: DB, user: FormWriter) -> Any:
    chat = service.create_chat(db, user, service.get_project(db, pid))
    return RedirectResponse(f"/chats/{chat.id}", status_code=303)


@router.get("/chats/{cid}", response_class=HTMLResponse)
def chat_page(request: Request, cid: int, db: DB, user: Reader) -> Any:
    view = service.chat_view(db, service.get_chat(db, user, cid))
    return render(request, "chat.html", {"c": view, "t": view["task"], "flags": service.FLAGS})


@router.post("/chats/{cid}")
def chat_form(
    request: Request, cid: int, db: DB, user: FormWriter, text: Annotated[str, Form()] = ""
) -> Any:
    chat = service.get_chat(db, user, cid)
    service.add_human_turn(db, chat, text)
    request.app.state.worker.start(chat.id)
    return RedirectResponse(f"/chats/{cid}", status_code=303)


# ---------------------------------------------------------------------------- admins


def _admin_page(request: Request, db: DB, user: Any, new_token: Any = None) -> Any:
    context = {
        "users": service.list_users(db),
        "projects": service.projects_for(db, user),
        "kinds": service.KINDS,
        "modes": service.MODES,
        "scales": list(service.SCALES),
        "new_token": new_token,
    }
    return render(request, "admin.html", context)


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, db: DB, user: Admin) -> Any:
    return _admin_page(request, db, user)


@router.post("/admin/users")
def admin_users_form(
    request: Request,
    db: DB,
    user: Admin,
    _: FormWriter,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()] = "annotator",
) -> Any:
    created, token = service.create_user(db, name, password, role)
    return _admin_page(request, db, user, (created.name, token))


@router.post("/admin/projects")
def admin_projects_form(
    db: DB,
    _: Admin,
    __: FormWriter,
    name: Annotated[str, Form()],
    kind: Annotated[str, Form()],
    mode: Annotated[str, Form()] = "helpful",
    overlap: Annotated[int, Form()] = 1,
    guidelines: Annotated[str, Form()] = "",
    policy_a: Annotated[str, Form()] = "",
    policy_b: Annotated[str, Form()] = "",
    scale: Annotated[str, Form()] = "thumbs",
    aspects: Annotated[str, Form()] = "",
) -> Any:
    rating = {"scale": scale, "aspects": aspects or None} if kind == "rating" else {}
    project = service.create_project(
        db,
        name,
        kind,
        mode,
        overlap,
        guidelines or None,
        policy_a or None,
        policy_b or None,
        **rating,
    )
    return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)


@router.get("/admin/projects/{pid}", response_class=HTMLResponse)
def admin_project_page(request: Request, pid: int, db: DB, _: Admin) -> Any:
    project = service.get_project(db, pid)
    return render(request, "project.html", {"p": project, "s": service.stats(db, project)})


@router.post("/admin/projects/{pid}/import")
def admin_import_form(
    pid: int, db: DB, _: Admin, __: FormWriter, file: Annotated[UploadFile, File()]
) -> Any:
    project = service.get_project(db, pid)
    name = file.filename or "upload"
    text = service.decode_items_file(file.file.read(), name)
    rows = service.read_items_file(text, project.kind, name)
    service.import_items(db, project, rows)
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.get("/admin/projects/{pid}/export")
def admin_export(
    pid: int,
    db: DB,
    _: Admin,
    format: str = "pairs",
    ties: str = "drop",
    threshold: int | None = None,
    aspect: str | None = None,
) -> Any:
    project = service.get_project(db, pid)
    rows, _report = service.export_rows(db, project, format, ties, threshold, aspect)
    name = f"{project.id}-{format}.jsonl"
    return PlainTextResponse(
        service.write_jsonl(rows),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
