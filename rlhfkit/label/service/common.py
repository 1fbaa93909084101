"""What every part of the service shares: the error it raises, the vocabularies (kinds,
modes, flags, strengths), the default guidelines and the text-field check."""

from __future__ import annotations

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


def text_field(value: Any, field: str) -> str:
    """`value` if it is non-empty text of at most MAX_TEXT characters."""
    if not isinstance(value, str) or not value.strip():
        raise LabelError(422, f"{field}: expected non-empty text")
    if len(value) > MAX_TEXT:
        raise LabelError(422, f"{field}: longer than {MAX_TEXT} characters")
    return value
