"""The web app: server-rendered pages for people (`pages`) and a JSON API under /api, documented
at /docs (`api`), both thin routers over `rlhfkit.label.service`. `create_app` puts what they
share on the app's state (`database`, `signer`, `worker`, `templates`) and turns errors into
answers.

- Authentication: a signed session cookie (pages, and the API from a browser) or
  `Authorization: Bearer <token>` (scripts). Every state-changing request needs one; with the
  cookie it also needs the CSRF token (form field `csrf_token` or header `X-CSRF-Token`), see
  `rlhfkit.label.auth` and `rlhfkit.label.security`. Missing authentication is 401, a missing
  or wrong CSRF token 403.
- Output escaping: Jinja2 autoescaping is on for every template, and no template marks user
  text `|safe`; JSON responses are JSON. Pages send a Content-Security-Policy that allows only
  the app's own scripts and styles, so an injected <script> would not run even if it got through.
- Errors: a `LabelError` becomes its status with `{"detail": message}`; FastAPI's own request
  validation (malformed JSON, missing or mistyped fields) answers 422 naming the field.
- Every asset (CSS, the small JS file) is served by the app from `rlhfkit/label/static`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfkit import __version__
from rlhfkit.label import api, pages, service
from rlhfkit.label.chat import ChatWorker
from rlhfkit.label.db import Database
from rlhfkit.label.security import Signer
from rlhfkit.label.service import LabelError

HERE = Path(__file__).parent


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
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.autoescape = True
    templates.env.globals["strengths"] = service.STRENGTHS
    app.state.database, app.state.signer, app.state.worker = database, signer, worker
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.add_exception_handler(LabelError, _label_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith("/api") and path not in ("/docs", "/openapi.json")


def _error_page(request: Request, message: str, status: int) -> Any:
    return pages.render(request, "message.html", {"title": "Error", "message": message}, status)


def _json(content: Any, status: int) -> Response:
    """An error as JSON in ASCII: the problem may quote what the client sent, which may hold a
    lone surrogate (no UTF-8 form); the input itself is not echoed."""
    body = json.dumps(content, ensure_ascii=True, default=str)
    return Response(body, status_code=status, media_type="application/json")


def _label_error(request: Request, exc: LabelError) -> Any:
    if not _wants_html(request):
        return _json({"detail": exc.message}, exc.status)
    if exc.status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return _error_page(request, exc.message, exc.status)


def _invalid(request: Request, exc: RequestValidationError) -> Any:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    if _wants_html(request):
        return _error_page(request, problems, 422)
    errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
    return _json({"detail": problems, "errors": errors}, 422)


def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    if _wants_html(request):
        return _error_page(request, str(exc.detail), exc.status_code)
    return _json({"detail": exc.detail}, exc.status_code)
