"""User mistakes as one line, bugs as tracebacks: `reported()`, used by every command.

A mistake in the user's input — a config key or value (`ConfigError`) or a data file
(`DataError`: file, line, field), both `UserError`s, or a path that is not there
(`FileNotFoundError`, which the model, tokenizer and data loaders raise naming the config key) —
is printed as one red line on stderr and the command exits with status 2, having written
nothing it need not have. Any other exception is a
bug in rlhfkit and keeps its traceback. `RLHFKIT_DEBUG=1` shows the traceback of user mistakes
too (for a bug report, or to see where a message came from).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

DEBUG_ENV = "RLHFKIT_DEBUG"


class UserError(Exception):
    """Base of the errors that are the user's to fix (`config.ConfigError`,
    `data.DataError`); their message is what the user sees."""

    kind = "error"


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


def debug() -> bool:
    """Whether `RLHFKIT_DEBUG` asks for tracebacks of user mistakes."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print `message` in red on stderr and exit with `code`."""
    import typer

    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a user mistake raised inside into `fail(...)` (see the module docstring)."""
    try:
        yield
    except USER_ERRORS as e:
        if debug():
            raise
        fail(f"{getattr(e, 'kind', 'error')}: {e}")
