"""Rows in: JSONL (.jsonl, .jsonl.gz), JSON, CSV, Parquet, `datasets` folders and hub names.

Every row comes out as `(location, dict)` or as a `Problem` (undecodable bytes, invalid JSON, a
row that is not an object), never as an exception, so the readers can report all bad rows at
once. Implementation details:

- JSONL is read as bytes and decoded line by line (UTF-8, a BOM on the first line tolerated), so
  one undecodable line is one problem with its line number instead of a crash of the whole file.
  A text file (JSONL, JSON, CSV) holding a NUL byte is a binary file: one problem for the file.
- JSON: a top-level list of objects (or `{"data": [...]}`); `line` is the item number (1-based).
- CSV: `csv.DictReader`; `line` is the physical line where the row ends. Cells holding lists
  (`messages`, `responses`, `scores`) are JSON-decoded by the format parsers, since CSV has no
  lists.
- Parquet via `pyarrow` (installed with `datasets`); `datasets.load_from_disk` folders; any other
  string that is not an existing path is tried as a hub dataset name with
  `datasets.load_dataset(name, split=split)` (for users with internet; tests use local paths).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.data.problems import Problem

Row = tuple[str, int, dict[str, Any]]  # (file, line, row)


def iter_rows(source: str | Path, split: str = "train") -> Iterator[Row | Problem]:
    """Yield every row of `source` as `(file, line, dict)`, or a `Problem` for a broken row."""
    path = Path(source)
    name = str(source)
    if path.is_dir():
        try:
            ds = _load_from_disk(path, split)
        except Exception as e:  # not a `datasets` folder, missing split, version mismatch
            yield Problem(name, 0, "<source>", f"cannot load as a `datasets` folder: {e}")
            return
        yield from _iter_datasets(ds, name)
        return
    if not path.exists():
        if _looks_like_file(name):
            yield Problem(name, 0, "<file>", "no such file")
            return
        yield from _iter_hub(name, split)
        return
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".jsonl.gz") or suffixes.endswith(".json.gz"):
        with gzip.open(path, "rb") as f:
            try:
                data = f.read()
            except (OSError, EOFError) as e:
                yield Problem(name, 0, "<file>", f"cannot decompress: {e}")
                return
        yield from _iter_jsonl_bytes(data, name)
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json", ".csv", ".tsv"):
        try:
            data = path.read_bytes()
        except OSError as e:  # permissions, a special file
            yield Problem(name, 0, "<file>", f"cannot read: {e.strerror or e}")
            return
        if b"\x00" in data:  # text never holds NUL: one line, not a problem per "row"
            at = data.index(b"\x00")
            yield Problem(
                name, 0, "<file>", f"not UTF-8 text: a NUL byte at byte {at} (binary? UTF-16?)"
            )
            return
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            yield from _iter_jsonl_bytes(data, name)
        elif path.suffix.lower() == ".json":
            yield from _iter_json(data, name)
        else:
            yield from _iter_csv(data, name, "\t" if path.suffix.lower() == ".tsv" else ",")
    elif path.suffix.lower() == ".parquet":
        yield from _iter_parquet(path, name)
    else:
        yield Problem(
            name, 0, "<file>", "unknown file type (use .jsonl, .jsonl.gz, .json, .csv or .parquet)"
        )


def _looks_like_file(name: str) -> bool:
    # A hub name is "owner/name" or "name"; anything with a known suffix or a path separator
    # beyond one "/" is a missing local file, which deserves "no such file", not a network call.
    suffixes = (".jsonl", ".gz", ".json", ".csv", ".tsv", ".parquet", ".ndjson")
    return (
        name.lower().endswith(suffixes) or name.startswith((".", "/", "~")) or name.count("/") > 1
    )


def _iter_jsonl_bytes(data: bytes, name: str) -> Iterator[Row | Problem]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Problem(name, lineno, "<bytes>", f"not valid UTF-8 at byte {e.start}: {e.reason}")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Problem(name, lineno, "<json>", f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        if not isinstance(obj, dict):
            yield Problem(name, lineno, "<json>", f"expected a JSON object, got {_kind(obj)}")
            continue
        yield name, lineno, obj


def _iter_json(data: bytes, name: str) -> Iterator[Row | Problem]:
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        yield Problem(name, 0, "<bytes>", f"not valid UTF-8 at byte {e.start}: {e.reason}")
        return
    except json.JSONDecodeError as e:
        yield Problem(name, e.lineno, "<json>", f"invalid JSON: {e.msg} (column {e.colno})")
        return
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        yield Problem(name, 1, "<json>", f"expected a list of objects, got {_kind(obj)}")
        return
    for i, item in enumerate(obj, start=1):
        if isinstance(item, dict):
            yield name, i, item
        else:
            yield Problem(name, i, "<json>", f"expected a JSON object, got {_kind(item)}")


def _iter_csv(data: bytes, name: str, delimiter: str) -> Iterator[Row | Problem]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # Find the line of the first bad byte so the user can go straight to it.
        line = data[: e.start].count(b"\n") + 1
        yield Problem(name, line, "<bytes>", f"not valid UTF-8: {e.reason}")
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if None in row:
                yield Problem(name, reader.line_num, "<csv>", "more cells than header columns")
                continue
            yield name, reader.line_num, {k: v for k, v in row.items() if v is not None}
    except csv.Error as e:
        yield Problem(name, reader.line_num, "<csv>", f"malformed CSV: {e}")


def _iter_parquet(path: Path, name: str) -> Iterator[Row | Problem]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        yield Problem(name, 0, "<file>", f"cannot read Parquet: {e}")
        return
    for i, row in enumerate(table.to_pylist(), start=1):
        yield name, i, row


def _load_from_disk(path: Path, split: str) -> Any:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise KeyError(f"no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    return ds


def _iter_hub(name: str, split: str) -> Iterator[Row | Problem]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # network, auth, missing dataset: all reported the same way
        yield Problem(name, 0, "<source>", f"not a local file and not loadable from the hub: {e}")
        return
    yield from _iter_datasets(ds, f"{name}[{split}]")


def _iter_datasets(ds: Any, name: str) -> Iterator[Row | Problem]:
    for i, row in enumerate(ds, start=1):
        yield name, i, dict(row)


def _kind(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(obj), type(obj).__name__
    )
