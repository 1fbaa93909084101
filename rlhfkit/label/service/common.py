"""What every part of the service shares: the error it raises, the vocabularies (kinds,
modes, flags, strengths), the default guidelines and the text-field check."""

from __future__ import annotations

import json
from typing import Any

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


class LabelError(Exception):
    """A request the app refuses: `status` is the HTTP status, `message` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def unicode_text(value: str, field: str) -> str:
    """`value` if it has a UTF-8 form: JSON's "\\ud800" parses to a lone surrogate, which has
    none, so neither database could store it and no answer could carry it back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LabelError(422, f"{field}: contains a lone surrogate (not Unicode text)") from None
    return value


def storable(value: str, field: str) -> str:
    """`value` if a text column of both databases can hold it: Unicode text without a NUL
    character (PostgreSQL's text types cannot hold one; its json type, where prompts and
    replies live, can)."""
    if "\x00" in value:
        raise LabelError(422, f"{field}: contains a NUL character")
    return unicode_text(value, field)


def text_field(value: Any, field: str) -> str:
    """`value` if it is non-empty Unicode text of at most MAX_TEXT characters (a prompt turn
    or a reply, kept in a JSON column)."""
    if not isinstance(value, str) or not value.strip():
        raise LabelError(422, f"{field}: expected non-empty text")
    if len(value) > MAX_TEXT:
        raise LabelError(422, f"{field}: longer than {MAX_TEXT} characters")
    return unicode_text(value, field)


def json_field(value: Any, field: str) -> Any:
    """`value` if it is JSON both databases store: no NaN or infinity (Python's JSON parser
    accepts them, PostgreSQL's json type does not) and no lone surrogate."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise LabelError(
            422, f"{field}: not storable JSON (NaN, infinity or a lone surrogate)"
        ) from None
    except RecursionError:
        raise LabelError(422, f"{field}: nested too deeply") from None
    return value
