"""`rlhfkit data inspect PATH`: the first thing to run on a new dataset.

Prints what the readers make of it: the format detected, counts (rows, records, bad rows
skipped, duplicates, rows dropped by options, rows that needed special handling), length
statistics, every problem as `file:line: field: message` (the first 20), and a few examples
formatted as the model will see them. Bad rows never stop inspection (it reads with
`on_error="skip"`), but they decide the exit status, so a script can gate on it: 0 when every
row gave a record, 1 when there were problems or no records at all (`--report-only`: always 0
once the source could be read), 2 when the source or an option is unusable.

Lengths are tokens when `--tokenizer` names a local Hugging Face tokenizer folder (no tokenizer
is assumed, and none is downloaded). Without one they are whitespace-separated words, or
characters when most of the text is in scripts written without spaces (Chinese, Japanese,
Thai, ...), where a "word" would be a whole sentence.
"""

from __future__ import annotations

import statistics
import unicodedata
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Look at a dataset before training on it.", no_args_is_help=True, add_completion=False
)

TASKS = ("auto", "sft", "preferences", "ranked", "prompts")


def _fail(message: str) -> None:
    from rlhfkit.errors import fail

    fail(message)


def parse_columns(text: str | None) -> dict[str, str]:
    """`"prompt=question,chosen=good"` → {"prompt": "question", "chosen": "good"}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(
                f"--columns: expected NAME=COLUMN pairs separated by commas, got {part!r}"
            )
        out[key.strip()] = value.strip()
    return out


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="a data file, a datasets folder or a hub name")],
    format: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="auto, hh, shp, summarize, summarize_axis, webgpt, generic"
        ),
    ] = "auto",
    task: Annotated[
        str, typer.Option(help="auto (from the first row), sft, preferences, ranked or prompts")
    ] = "auto",
    tokenizer: Annotated[
        str | None, typer.Option(help="local tokenizer folder: lengths in its tokens")
    ] = None,
    columns: Annotated[
        str | None, typer.Option(help="generic format: prompt=question,chosen=good,...")
    ] = None,
    split: Annotated[str, typer.Option(help="split of a datasets folder or hub dataset")] = "train",
    examples: Annotated[int, typer.Option(help="how many formatted examples to print")] = 3,
    report_only: Annotated[
        bool,
        typer.Option(help="exit 0 even when rows are bad or there are no records (only report)"),
    ] = False,
) -> None:
    """Counts, length statistics, problems and formatted examples of the dataset at PATH.

    Exit status: 0 clean, 1 bad rows or no records (unless --report-only), 2 unusable input."""
    import logging

    from rich.console import Console
    from rich.table import Table

    from rlhfkit.data.chat import encode_prompt, encode_response, format_hh, format_prompt
    from rlhfkit.data.problems import DataError
    from rlhfkit.data.readers import guess_task, read

    console = Console(highlight=False)
    if task not in TASKS:
        _fail(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    try:
        cols = parse_columns(columns)
        if task == "auto":
            task = guess_task(path, format, cols, split)  # type: ignore[arg-type]
        # The table below reports skipped rows; the reader's own warning would say it twice.
        logger = logging.getLogger("rlhfkit.data")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            result = read(path, task, format, cols or None, "skip", split=split)  # type: ignore[arg-type]
        finally:
            logger.setLevel(level)
    except (DataError, ValueError) as e:
        _fail(f"error: {e}")

    tok: Any = None
    if tokenizer:
        from transformers import AutoTokenizer

        if not Path(tokenizer).is_dir():
            _fail(f"error: --tokenizer {tokenizer}: not a local tokenizer folder")
        try:
            tok = AutoTokenizer.from_pretrained(tokenizer)
        except Exception as e:  # transformers raises several types for a bad folder
            _fail(f"error: cannot load tokenizer from {tokenizer}: {e}")

    records = result.records
    console.print(
        f"[bold]{path}[/bold]  format: {result.format or '?'}  task: {task}", soft_wrap=True
    )
    counts = Table("count", "value", title="counts")
    counts.add_row("rows read", str(result.n_rows))
    counts.add_row("records", str(len(records)))
    counts.add_row("bad rows skipped", str(result.n_skipped))
    counts.add_row("duplicates (kept)", str(result.n_duplicates))
    counts.add_row("dropped by options", str(result.n_dropped))
    for reason, n in sorted(result.notes.items()):
        counts.add_row(reason, str(n))
    console.print(counts)

    if records:
        if tok is not None:
            unit = "tokens"
            prompt_len = lambda r: len(encode_prompt(tok, r.prompt))  # noqa: E731
            reply_len = lambda text: len(encode_response(tok, text))  # noqa: E731
        else:
            count, unit = text_length(records)
            prompt_len = lambda r: sum(count(m.content) for m in r.prompt)  # noqa: E731
            reply_len = count
            unit += " (pass --tokenizer for tokens)"
        stats = Table("part", "min", "mean", "median", "p95", "max", title=f"lengths in {unit}")
        for part, values in _length_parts(records, prompt_len, reply_len).items():
            stats.add_row(part, *_summary(values))
        console.print(stats)

    if result.problems:
        console.print(f"[bold red]{len(result.problems)} problem(s)[/bold red]")
        for p in result.problems[:20]:
            console.print(str(p), markup=False, soft_wrap=True)  # one greppable line each
        if len(result.problems) > 20:
            console.print(f"... and {len(result.problems) - 20} more")
    elif records:
        console.print("[green]no problems found[/green]")
    if not records:
        console.print(f"[bold red]no records[/bold red]: {result.why_empty()}", soft_wrap=True)

    for rec in records[:examples]:
        prompt = format_prompt(tok, rec.prompt) if tok is not None else format_hh(rec.prompt)
        console.rule(rec.source, style="dim")
        console.print(prompt, markup=False)
        for label, text in _replies(rec):
            console.print(f"[bold]{label}[/bold]")
            console.print(text, markup=False)
    if (result.problems or not records) and not report_only:
        raise typer.Exit(1)


# Scripts written without spaces between words: Han, kana, Hangul is spaced (not here), Thai,
# Lao, Khmer, Myanmar, Tibetan.
_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _unspaced(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(_UNSPACED)


def text_length(records: list[Any]) -> tuple[Any, str]:
    """A length function and its unit for `records` without a tokenizer: characters (spaces
    left out) when most letters are in scripts written without spaces, else words."""
    letters = unspaced = 0
    for rec in records[:1000]:
        for text in [m.content for m in rec.prompt] + [t for _, t in _replies(rec)]:
            for ch in text:
                if ch.isalpha():
                    letters += 1
                    unspaced += _unspaced(ch)
    if letters and unspaced / letters > 0.5:
        return (lambda text: sum(not ch.isspace() for ch in text)), "characters"
    return (lambda text: len(text.split())), "whitespace words"


def _replies(rec: Any) -> list[tuple[str, str]]:
    if hasattr(rec, "chosen"):
        return [("chosen:", rec.chosen), ("rejected:", rec.rejected)]
    if hasattr(rec, "responses"):
        return [(f"#{i + 1}:", r) for i, r in enumerate(rec.responses)]
    if hasattr(rec, "response"):
        return [("response:", rec.response)]
    return []


def _length_parts(records: list[Any], prompt_len: Any, reply_len: Any) -> dict[str, list[int]]:
    parts: dict[str, list[int]] = {"prompt": [prompt_len(r) for r in records]}
    total: list[int] = []
    for r, p in zip(records, parts["prompt"], strict=True):
        for label, text in _replies(r):
            n = reply_len(text)
            key = label.rstrip(":") if not label.startswith("#") else "responses"
            parts.setdefault(key, []).append(n)
            total.append(p + n)
    if total:
        parts["prompt + each reply"] = total
    return parts


def _summary(values: list[int]) -> list[str]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return [
        str(ordered[0]),
        f"{statistics.fmean(ordered):.1f}",
        f"{statistics.median(ordered):g}",
        str(p95),
        str(ordered[-1]),
    ]
