"""`rlhfkit label`: the human-feedback collection app.

    rlhfkit label serve [--db URL] [--host 127.0.0.1] [--port 8000]
    rlhfkit label user create NAME [--role annotator|admin]     prints the API token
    rlhfkit label project create NAME --kind pairwise|ranking|chat|rating [--mode helpful|red_team]
        [--overlap R] [--policy-a DIR] [--policy-b DIR] [--scale thumbs|1-5|1-7] [--aspects A,B:1-7]
    rlhfkit label project list
    rlhfkit label import --project P FILE                       JSONL: prompt + responses or chosen/rejected
    rlhfkit label export --project P --format pairs|ranked|hh|ratings -o FILE [--ties drop|keep]
        [--threshold T] [--aspect A]                            ratings: Likert score >= T is desirable
    rlhfkit label stats --project P
    rlhfkit label migrate                                       bring the schema to this version

`--db` takes a SQLAlchemy URL (`sqlite:///label.db`, `postgresql://user@host/db`) or a file
path; it defaults to $RLHFKIT_LABEL_DB, else `sqlite:///label.db`. Every command upgrades the
schema first, so a database made by an older rlhfkit keeps working. Only this module's
commands import FastAPI and SQLAlchemy, and only when they run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Collect human feedback: the labelling web app.", no_args_is_help=True)
user_app = typer.Typer(help="Accounts.", no_args_is_help=True)
project_app = typer.Typer(help="Projects.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL or SQLite path (default $RLHFKIT_LABEL_DB or label.db)."
    ),
]


def _database(url: str | None) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from rlhfkit.label.db import DEFAULT_URL, Database

    given = url or os.environ.get("RLHFKIT_LABEL_DB") or DEFAULT_URL
    database = Database(given)
    try:
        database.upgrade()
    except SQLAlchemyError as e:  # a folder that does not exist, a server that refuses, ...
        reason = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        database.close()
        raise _fail(f"--db {given}: cannot open the database ({reason})") from None
    return database


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _run(database: Any, fn: Any) -> Any:
    from rlhfkit.label.service import LabelError

    try:
        with database.session() as db:
            return fn(db)
    except LabelError as e:
        raise _fail(e.message) from None
    finally:
        database.close()


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the web app (pages at /, JSON API at /api, its documentation at /docs)."""
    import uvicorn

    from rlhfkit.label.app import create_app

    database = _database(db)
    typer.echo(
        f"rlhfkit label: {database.engine.url.render_as_string(hide_password=True)} on http://{host}:{port}"
    )
    uvicorn.run(create_app(database), host=host, port=port, log_level=log_level)


@app.command()
def migrate(db: DbOption = None) -> None:
    """Create or upgrade the database schema to this rlhfkit's version."""
    from rlhfkit.label.db import current_revision

    database = _database(db)
    typer.echo(f"schema at revision {current_revision(database.engine)}")
    database.close()


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="annotator or admin.")] = "annotator",
    password: Annotated[
        str | None,
        typer.Option(help="Password (default: $RLHFKIT_LABEL_PASSWORD, else asked for)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create an account and print its API token (shown only once)."""
    from rlhfkit.label import service

    password = password or os.environ.get("RLHFKIT_LABEL_PASSWORD")
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    user, token = _run(_database(db), lambda s: service.create_user(s, name, password, role))
    typer.echo(f"created {role} {user.name}; API token (shown once): {token}")


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="Project name.")],
    kind: Annotated[str, typer.Option(help="pairwise, ranking, chat or rating.")],
    mode: Annotated[
        str, typer.Option(help="helpful or red_team (pick the more harmful).")
    ] = "helpful",
    overlap: Annotated[int, typer.Option(help="Annotators per item (r).")] = 1,
    guidelines: Annotated[
        Path | None, typer.Option(help="Text file with the guidelines (default: per mode).")
    ] = None,
    policy_a: Annotated[
        str | None, typer.Option(help="Chat: policy model folder for reply A.")
    ] = None,
    policy_b: Annotated[
        str | None, typer.Option(help="Chat: policy for reply B (default A).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Chat: longest reply in tokens.")] = 48,
    temperature: Annotated[float, typer.Option(help="Chat: sampling temperature.")] = 1.0,
    scale: Annotated[
        str, typer.Option(help="Rating: thumbs (up/down), 1-5 or 1-7 (Likert).")
    ] = "thumbs",
    aspects: Annotated[
        str | None,
        typer.Option(
            help="Rating: comma-separated aspects, each optionally NAME:SCALE "
            "(e.g. helpful:1-7,honest,harmless); default one, 'overall'."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create a labelling project."""
    from rlhfkit.label import service

    text = guidelines.read_text(encoding="utf-8") if guidelines else None
    rating = {"scale": scale, "aspects": aspects} if kind == "rating" else {}
    project = _run(
        _database(db),
        lambda s: service.create_project(
            s, name, kind, mode, overlap, text, policy_a, policy_b, max_new_tokens, temperature,
            **rating,
        ),
    )  # fmt: skip
    rated = project.settings.get("aspects")
    rated = "; " + ", ".join(f"{a['name']} {a['scale']}" for a in rated) if rated else ""
    typer.echo(
        f"created project {project.id} {project.name!r} ({kind}, {mode}, overlap {overlap}{rated})"
    )


@project_app.command("list")
def project_list(db: DbOption = None) -> None:
    """Projects with their progress."""
    from rlhfkit.label import service
    from rlhfkit.label.db import Project

    def show(s: Any) -> None:
        for p in s.query(Project).order_by(Project.id):
            st = service.stats(s, p)
            typer.echo(
                f"{p.id}\t{p.name}\t{p.kind}\t{p.mode}\titems {st['items']}\t"
                f"done {st['tasks_done']}\topen {st['tasks_open']}"
            )

    _run(_database(db), show)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSONL: prompt with responses, or chosen/rejected.")],
    project: Annotated[str, typer.Option(help="Project name or id.")],
    db: DbOption = None,
) -> None:
    """Import candidate sets (e.g. what `rlhfkit sim collect` writes) and assign them."""
    from rlhfkit.label import service

    if not file.is_file():
        raise _fail(f"no such file: {file}")

    def run(s: Any) -> int:
        p = service.get_project(s, project)
        text = service.decode_items_file(file.read_bytes(), str(file))
        rows = service.read_items_file(text, p.kind, str(file))
        return len(service.import_items(s, p, rows))

    n = _run(_database(db), run)
    typer.echo(f"imported {n} items into {project}")


@app.command()
def export(
    project: Annotated[str, typer.Option(help="Project name or id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    format: Annotated[
        str, typer.Option(help="pairs, ranked or hh; ratings for a rating project.")
    ] = "pairs",
    ties: Annotated[str, typer.Option(help="drop, or keep (pairs: margin 0, meta.tie).")] = "drop",
    threshold: Annotated[
        int | None,
        typer.Option(
            help="ratings, Likert aspect: a score >= THRESHOLD is desirable (label true), "
            "others not. Default: above the scale's middle true, below false, the middle dropped."
        ),
    ] = None,
    aspect: Annotated[
        str | None,
        typer.Option(help="ratings: the aspect whose score sets the label (default: the first)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the judgments as files `rlhfkit rm` / `rlhfkit dpo` (ratings: `rlhfkit kto`)
    read, plus FILE.report.json (who labelled what, the agreement table)."""
    from rlhfkit.label import service

    def run(s: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        p = service.get_project(s, project)
        return service.export_rows(s, p, format, ties, threshold, aspect)

    rows, report = _run(_database(db), run)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(service.write_jsonl(rows), encoding="utf-8")
    tmp.replace(output)
    report_path = output.with_name(output.name + ".report.json")
    report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    rule = f" ({report['rule']}; {report['dropped_middle']} dropped)" if format == "ratings" else ""
    typer.echo(f"wrote {len(rows)} rows{rule} to {output} and the report to {report_path}")


@app.command()
def stats(
    project: Annotated[str, typer.Option(help="Project name or id.")],
    db: DbOption = None,
) -> None:
    """Agreement and progress of a project, as JSON."""
    from rlhfkit.label import service

    result = _run(_database(db), lambda s: service.stats(s, service.get_project(s, project)))
    typer.echo(json.dumps(result, indent=1))


if __name__ == "__main__":  # `python -m rlhfkit.label.cli`: skips loading the other command groups
    app()
