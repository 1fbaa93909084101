"""What every part of the service shares: the error it raises, the vocabularies (kinds,
modes, flags, strengths), the default guidelines and the text-field check."""

from __future__ import annotations

import json
from typing import Any

from rlhfkit.label.scales import SCALES, THUMBS

KINDS = ("pairwise", "ranking", "chat", "rating")
MODES = ("helpful", "red_team")
ROLES = ("annotator", "admin")
FLAGS = ("unsafe", "pii", "wrong_language")
STRENGTHS = {1: "slightly better", 2: "better", 3: "much better"}
MAX_TEXT = 20_000  # characters in one prompt turn, reply or note
MAX_CANDIDATES = 9  # InstructGPT ranked K = 4–9 outputs

DEFAULT_ASPECT = "overall"
MAX_ASPECTS = 8

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
    "rating": (
        "Rate the reply on its own, on each aspect shown. Thumbs up: you would be glad to get "
        "this reply; down: you would not. On a number scale, 1 is very poor and the highest "
        "number excellent; use the middle when it is neither. Helpful: it does what was asked; "
        "honest: it is correct, or says it does not know; harmless: it does not help with harm "
        "and is not rude. Refusing a harmless request is unhelpful."
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


def parse_aspects(spec: Any, scale: str = "thumbs") -> list[dict[str, str]]:
    """A rating project's aspects from `spec`: None (one aspect, "overall"), or a list of names
    (or one comma-separated string), each optionally with its own scale ("helpful:1-7") else
    `scale`. Returns [{"name", "scale"}] in the order given."""
    if scale not in SCALES:
        raise LabelError(422, f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if spec is None or spec == "" or spec == []:
        return [{"name": DEFAULT_ASPECT, "scale": scale}]
    if isinstance(spec, str):
        spec = [part.strip() for part in spec.split(",")]
    if not isinstance(spec, list) or not all(isinstance(a, str) for a in spec):
        raise LabelError(422, "aspects: a list of names, each optionally name:scale")
    if len(spec) > MAX_ASPECTS:
        raise LabelError(422, f"aspects: at most {MAX_ASPECTS}, got {len(spec)}")
    aspects = []
    for part in spec:
        name, _, own = part.partition(":")
        name, own = name.strip(), own.strip() or scale
        if not name or len(name) > 32 or not all(ch.isalnum() or ch in "_-" for ch in name):
            raise LabelError(422, f"aspects: {part!r}: a name of 1–32 letters, digits, _ or -")
        if own not in SCALES:
            raise LabelError(422, f"aspects: {part!r}: scale must be one of {', '.join(SCALES)}")
        aspects.append({"name": name, "scale": own})
    names = [a["name"] for a in aspects]
    if len(set(names)) != len(names):
        raise LabelError(422, f"aspects: a name twice in {', '.join(names)}")
    return aspects


def whole_number(value: Any) -> bool:
    """An int that is not a bool (JSON's true is no score or index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def rating_value(value: Any, scale: str, field: str) -> int:
    """A score on `scale`: "up" / "down" for thumbs, an integer in range for Likert."""
    if scale == "thumbs":
        if value not in THUMBS or not isinstance(value, str):
            raise LabelError(422, f"{field}: 'up' or 'down'")
        return THUMBS[value]
    lo, hi = SCALES[scale]
    if not whole_number(value) or not lo <= value <= hi:
        raise LabelError(422, f"{field}: a whole number {lo}–{hi}")
    return value
