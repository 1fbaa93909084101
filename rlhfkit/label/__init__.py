"""rlhfkit.label: collect human feedback in a web app and export it as training files.

`rlhfkit label serve` runs it (see `cli` and docs/label.md). Module map: `db` (tables,
engine, Alembic migrations in `migrations/`), `security` (passwords, tokens, cookies, CSRF),
`service` (what the app does, without HTTP; one module per part), `scales` (rating scales and
the rating → label rule, without dependencies), `agreement` (inter-annotator statistics),
`chat` (live replies off the request thread), `auth` (who is asking, as FastAPI
dependencies), `pages` and `api` (the two routers), `app` (builds the app around them),
`client` (the API from Python, used by `rlhfkit sim collect --server`), `cli`.

Nothing is imported here, so `rlhfkit --help` does not load FastAPI or SQLAlchemy.
"""
