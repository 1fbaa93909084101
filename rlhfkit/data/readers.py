"""Readers: `read_sft`, `read_preferences`, `read_ranked`, `read_prompts`, `read_unpaired`.

Each reads a source (see `rlhfkit.data.sources`), parses every row with the format's parser
(see `rlhfkit.data.formats`; `format="auto"` sniffs the fields of the first valid row), converts
the native record to the task's record type, validates, counts duplicates, and returns a
`ReadResult`. Conversions between tasks:

- preferences ← pairs as they are; ranked lists expand to their K·(K−1)/2 pairs (i preferred to
  j for every i < j), leaving out pairs whose scores tie.
- ranked ← ranked lists; a pair is a ranked list of K = 2.
- sft ← demonstrations; the chosen reply of a pair; the best reply of a ranked list; the
  desirable replies of unpaired rows (the undesirable ones are left out and counted).
- unpaired ← unpaired rows (prompt, completion, label) as they are; nothing else.
- prompts ← the prompt of any record.

Bad rows: `on_error="stop"` reads the whole source, then raises one `DataError` listing every
problem as `file:line: field: message`; `on_error="skip"` leaves bad rows out, counts them in
`n_skipped` and logs a warning with a sample. A source that cannot be read at all (missing
file, unknown type) raises `DataError` under either policy.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from rlhfkit.data import formats
from rlhfkit.data.problems import DataError, OnError, Problem, ReadResult, RowError
from rlhfkit.data.sources import iter_rows
from rlhfkit.types import PreferencePair, PromptRecord, RankedList, SFTExample, UnpairedExample

log = logging.getLogger("rlhfkit.data")

Task = Literal["sft", "preferences", "ranked", "prompts", "unpaired"]
Format = Literal[
    "auto", "hh", "shp", "summarize", "summarize_axis", "webgpt", "alpaca", "sharegpt", "generic"
]

_OPTIONS = {"min_score_ratio", "keep_ties", "strip_citations", "axis"}


def read_sft(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    **opts: Any,
) -> ReadResult[SFTExample]:
    """Demonstrations (`SFTExample`) from `source`; see the module docstring for the options."""
    return read(source, "sft", format, columns, on_error, **opts)


def read_preferences(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    **opts: Any,
) -> ReadResult[PreferencePair]:
    """Preference pairs from `source`; ranked lists expand to K·(K−1)/2 pairs."""
    return read(source, "preferences", format, columns, on_error, **opts)


def read_ranked(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    **opts: Any,
) -> ReadResult[RankedList]:
    """Ranked lists of K replies, best first, from `source` (pairs give K = 2)."""
    return read(source, "ranked", format, columns, on_error, **opts)


def read_prompts(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    **opts: Any,
) -> ReadResult[PromptRecord]:
    """Prompts (for RL and evaluation) from `source`: the prompt of every record."""
    return read(source, "prompts", format, columns, on_error, **opts)


def read_unpaired(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    **opts: Any,
) -> ReadResult[UnpairedExample]:
    """Replies judged on their own (`UnpairedExample`: prompt, completion, label), TRL's unpaired
    preference rows; `columns` maps `prompt`, `completion`, `label` to the file's names."""
    return read(source, "unpaired", format, columns, on_error, **opts)


def read(
    source: str | Path,
    task: Task,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "stop",
    *,
    split: str = "train",
    drop_duplicates: bool = False,
    **opts: Any,
) -> ReadResult[Any]:
    """Read `source` for `task`. Options: `split` (for `datasets` sources), `drop_duplicates`,
    `min_score_ratio` (SHP), `keep_ties` and `strip_citations` (WebGPT), `axis` (summarize axis
    ratings, default "overall")."""
    if task not in _CONVERT:
        raise ValueError(f"task must be one of {list(_CONVERT)}, got {task!r}")
    if format != "auto" and format not in formats.PARSERS:
        raise ValueError(f"format must be 'auto' or one of {list(formats.PARSERS)}, got {format!r}")
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    unknown = set(opts) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown reader option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    columns = dict(columns or {})
    bad_cols = [c for c in columns if c not in formats.COLUMN_NAMES]
    if bad_cols:
        raise ValueError(f"columns: unknown name(s) {bad_cols}; use {list(formats.COLUMN_NAMES)}")
    if columns and format == "auto":
        format = formats.format_for_columns(columns)  # a mapping names its format's fields

    result: ReadResult[Any] = ReadResult()
    notes: Counter[str] = result.notes
    rated: list[formats.RatedReply] = []
    parser = None
    convert = _CONVERT[task]
    natives: list[tuple[str, int, formats.NativeRecord]] = []
    short: dict[str, str] = {}
    for item in iter_rows(source, split):
        if isinstance(item, Problem):
            if item.line == 0:  # the source itself is unreadable: no policy can skip that
                raise DataError([item], header=f"cannot read {source}")
            result.n_rows += 1
            result.problems.append(item)
            continue
        file, line, row = item
        result.n_rows += 1
        if parser is None:
            result.format = formats.sniff_format(row) if format == "auto" else format
            parser = formats.PARSERS[result.format]
        if file not in short:  # records name local files by base name, hub datasets in full
            short[file] = Path(file).name if Path(file).exists() else file
        ctx = formats.Context(f"{short[file]}:{line}", columns, opts, notes)
        try:
            native = parser(row, ctx)
        except formats.Drop as reason:
            result.n_dropped += 1
            notes[str(reason)] += 1
            continue
        except RowError as e:
            result.problems.append(Problem(file, line, e.field, e.message))
            continue
        if isinstance(native, formats.RatedReply):
            rated.append(native)
        else:
            natives.append((file, line, native))
    if rated:
        group_ctx = formats.Context(str(source), columns, opts, notes)
        natives.extend((str(source), 0, r) for r in formats.group_rated(rated, group_ctx))

    seen: set[Any] = set()
    for file, line, native in natives:
        try:
            records = convert(native, notes)
        except RowError as e:
            result.problems.append(Problem(file, line, e.field, e.message))
            continue
        for rec in records:
            key = _dedup_key(rec)
            if key in seen:
                result.n_duplicates += 1
                if drop_duplicates:
                    continue
            seen.add(key)
            result.records.append(rec)

    if result.problems:
        if on_error == "stop":
            raise DataError(result.problems, header=f"bad rows in {source}")
        result.n_skipped = len({(p.file, p.line) for p in result.problems})
        sample = "; ".join(str(p) for p in result.problems[:3])
        log.warning(
            "%s: skipped %d bad row(s) of %d (first: %s)",
            source,
            result.n_skipped,
            result.n_rows,
            sample,
        )
    return result


_NOUNS = {
    "sft": "demonstrations",
    "preferences": "preference pairs",
    "ranked": "ranked lists",
    "prompts": "prompts",
    "unpaired": "unpaired examples",
}


def require_records(result: ReadResult[Any], source: str | Path, task: Task) -> ReadResult[Any]:
    """`result` when it holds records; else a `DataError` saying why the read came back empty
    (no rows, every row bad, every row dropped), so no trainer starts on nothing."""
    if not result.records:
        raise DataError([], header=f"{source}: no {_NOUNS[task]}: {result.why_empty()}")
    return result


def guess_task(
    source: str | Path,
    format: Format = "auto",
    columns: dict[str, str] | None = None,
    split: str = "train",
) -> Task:
    """The task the first parseable row of `source` naturally serves (its native record type);
    "preferences" when no row parses."""
    for item in iter_rows(source, split):
        if isinstance(item, Problem):
            continue
        file, line, row = item
        fmt = formats.format_for_columns(columns) if columns and format == "auto" else format
        parser = formats.PARSERS[formats.sniff_format(row) if fmt == "auto" else fmt]
        try:
            native = parser(
                row, formats.Context(f"{file}:{line}", dict(columns or {}), {}, Counter())
            )
        except (RowError, formats.Drop):
            continue
        if isinstance(native, (RankedList, formats.RatedReply)):
            return "ranked"
        if isinstance(native, SFTExample):
            return "sft"
        if isinstance(native, PromptRecord):
            return "prompts"
        return "preferences"
    return "preferences"


# ---------------------------------------------------------------------------- conversions


def expand_pairs(ranked: RankedList) -> list[PreferencePair]:
    """The K·(K−1)/2 pairs of a ranked list, without the pairs whose scores tie."""
    k = len(ranked.responses)
    index = [(i, j) for i in range(k) for j in range(i + 1, k)]  # the order RankedList.pairs uses
    pairs = ranked.pairs()
    if ranked.scores is None:
        return pairs
    return [
        p for (i, j), p in zip(index, pairs, strict=True) if ranked.scores[i] != ranked.scores[j]
    ]


def _to_pairs(rec: formats.NativeRecord, notes: Counter[str]) -> list[PreferencePair]:
    if isinstance(rec, PreferencePair):
        return [rec]
    if isinstance(rec, RankedList):
        pairs = expand_pairs(rec)
        k = len(rec.responses)
        if len(pairs) < k * (k - 1) // 2:
            notes["ranked: tied pairs left out"] += k * (k - 1) // 2 - len(pairs)
        return pairs
    raise RowError("chosen", "missing: this row has no chosen/rejected (or ranked) replies")


def _to_ranked(rec: formats.NativeRecord, notes: Counter[str]) -> list[RankedList]:
    if isinstance(rec, RankedList):
        return [rec]
    if isinstance(rec, PreferencePair):
        return [
            RankedList(rec.prompt, (rec.chosen, rec.rejected), source=rec.source, meta=rec.meta)
        ]
    raise RowError("responses", "missing: this row has no ranked (or chosen/rejected) replies")


def _to_sft(rec: formats.NativeRecord, notes: Counter[str]) -> list[SFTExample]:
    if isinstance(rec, SFTExample):
        return [rec]
    if isinstance(rec, PreferencePair):
        return [SFTExample(rec.prompt, rec.chosen, source=rec.source, meta=rec.meta)]
    if isinstance(rec, RankedList):
        return [SFTExample(rec.prompt, rec.responses[0], source=rec.source, meta=rec.meta)]
    if isinstance(rec, UnpairedExample):
        if not rec.label:
            notes["unpaired: undesirable replies left out"] += 1
            return []
        return [SFTExample(rec.prompt, rec.completion, source=rec.source, meta=rec.meta)]
    raise RowError("response", "missing: this row is a prompt without a reply")


def _to_unpaired(rec: formats.NativeRecord, notes: Counter[str]) -> list[UnpairedExample]:
    if isinstance(rec, UnpairedExample):
        return [rec]
    raise RowError(
        "label",
        "missing: unpaired rows need prompt, completion and label (true = desirable)",
    )


def _to_prompts(rec: formats.NativeRecord, notes: Counter[str]) -> list[PromptRecord]:
    return [PromptRecord(rec.prompt, source=rec.source, meta=rec.meta)]


_CONVERT = {
    "sft": _to_sft,
    "preferences": _to_pairs,
    "ranked": _to_ranked,
    "prompts": _to_prompts,
    "unpaired": _to_unpaired,
}


def _dedup_key(rec: Any) -> tuple[Any, ...]:
    # Same prompt and same replies; `source` and `meta` never make two records different.
    if isinstance(rec, PreferencePair):
        return (rec.prompt, rec.chosen, rec.rejected)
    if isinstance(rec, RankedList):
        return (rec.prompt, rec.responses)
    if isinstance(rec, SFTExample):
        return (rec.prompt, rec.response)
    if isinstance(rec, UnpairedExample):
        return (rec.prompt, rec.completion, rec.label)
    return (rec.prompt,)
