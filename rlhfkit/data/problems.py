"""Bad-row reporting shared by every reader: `Problem`, `DataError`, `ReadResult`.

Bad data never surfaces as a stack trace: each bad row becomes a `Problem` naming the file, the
line (1-based; for .json files the item number, for Parquet and `datasets` sources the row
number), the field and what is wrong. Under `on_error="stop"` the reader collects every problem in
the source first and then raises one `DataError` listing them, so a user fixes a file in one pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from rlhfkit.errors import UserError

OnError = Literal["stop", "skip"]

MAX_SHOWN = 20  # problems printed in a DataError message; the rest are counted

R = TypeVar("R")


@dataclass(frozen=True)
class Problem:
    """One bad row: `file:line: field: message`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class RowError(ValueError):
    """Raised by a row parser; the reader turns it into a `Problem` for the row."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataError(UserError, ValueError):
    """Bad input data, with every problem found listed as `file:line: field: message` (one
    line when there is one problem: a missing or binary file, a single bad row)."""

    def __init__(self, problems: list[Problem], header: str = "bad data") -> None:
        self.problems = list(problems)
        if not self.problems:  # a problem with the source as a whole: the header says it all
            super().__init__(header)
            return
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"{header}: {self.problems[0]}")
            return
        lines = [str(p) for p in self.problems[:MAX_SHOWN]]
        more = len(self.problems) - MAX_SHOWN
        if more > 0:
            lines.append(f"... and {more} more problem(s)")
        super().__init__(f"{header}: {len(self.problems)} problem(s)\n" + "\n".join(lines))


@dataclass
class ReadResult(Generic[R]):
    """What a reader returns.

    `records`: the good records. `problems`: every bad row (skipped under `on_error="skip"`).
    `n_rows`: rows read from the source. `n_skipped`: bad rows skipped. `n_duplicates`: records
    equal to an earlier one (same prompt and replies; `source`/`meta` ignored), dropped only when
    asked. `n_dropped`: rows dropped on purpose by an option (SHP ratio filter, WebGPT ties).
    `notes`: counts of rows that needed special handling, by reason (kept, but worth knowing).
    `format`: the format the rows were parsed as (the sniffed one under `format="auto"`).
    """

    records: list[R] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_rows: int = 0
    n_skipped: int = 0
    n_duplicates: int = 0
    n_dropped: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    format: str = ""

    def why_empty(self) -> str:
        """Why a read gave no records, in words (for the "no records" error)."""
        if self.n_rows == 0:
            return "the source holds no rows (an empty or whitespace-only file?)"
        if self.n_skipped:
            return f"all {self.n_rows} row(s) were bad and skipped (first: {self.problems[0]})"
        if self.n_dropped:
            return f"all {self.n_rows} row(s) were dropped by reader options ({dict(self.notes)})"
        return f"none of its {self.n_rows} row(s) gave a record"
