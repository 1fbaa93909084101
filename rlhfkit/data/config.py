"""`DataConfig`: the data part of every training config, and `load_data` which applies it.

Defaults: `max_length=512` suits the tiny CPU models and most HH-RLHF pairs after prompt
truncation; `on_error="stop"` because silently training on a damaged file is worse than a clear
error before training starts (`skip` is one key away and reports what it skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.data.formats import COLUMN_NAMES
from rlhfkit.data.problems import DataError, ReadResult
from rlhfkit.data.readers import Format, Task, read, require_records
from rlhfkit.data.sampling import split_records

R = TypeVar("R")


class ReadOptions(ConfigBase):
    """How to read a source: format, column mapping, split, bad-row policy, per-format options.

    The shared part of every data config (`DataConfig` below, and the SFT, RM and PPO data
    configs), so `data.columns`, `data.split`, ... mean the same in every trainer."""

    format: Format = "auto"
    """auto (sniffed from the first row), hh, shp, summarize, summarize_axis, webgpt, alpaca,
    sharegpt or generic (see docs/data.md for which files each reads)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Canonical field -> the file's column name, e.g. {prompt: question, chosen: good}; for
    generic rows, and for alpaca / sharegpt files whose columns are renamed."""
    split: str = "train"
    """Split to read from `datasets` folders and hub datasets."""
    on_error: Literal["stop", "skip"] = "stop"
    """Bad rows: stop (list every problem, then fail) or skip (count them, show a sample, go on)."""
    drop_duplicates: bool = False
    """Drop records equal to an earlier one (same prompt and replies); they are counted anyway."""
    min_score_ratio: float | None = Field(None, gt=0.0)
    """SHP only: keep pairs whose score ratio is at least this (the SHP card suggests 2)."""
    keep_ties: bool = False
    """WebGPT only: keep comparisons with equal scores (meta["tie"] = True)."""
    strip_citations: bool = True
    """WebGPT only: remove citation markers like [1] from answers."""
    axis: str = "overall"
    """summarize_axis only: the rating axis that orders summaries."""

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(COLUMN_NAMES))
        if unknown:
            raise ValueError(f"unknown field name(s) {unknown}; use {list(COLUMN_NAMES)}")
        return columns

    def reader_options(self) -> dict[str, Any]:
        """Keyword arguments for `rlhfkit.data.read` (everything but the source and task)."""
        opts: dict[str, Any] = {
            "format": self.format,
            "columns": self.columns or None,
            "on_error": self.on_error,
            "split": self.split,
            "drop_duplicates": self.drop_duplicates,
        }
        if self.format in ("auto", "shp") and self.min_score_ratio is not None:
            opts["min_score_ratio"] = self.min_score_ratio
        if self.format in ("auto", "webgpt"):
            opts.update(keep_ties=self.keep_ties, strip_citations=self.strip_citations)
        if self.format in ("auto", "summarize_axis"):
            opts["axis"] = self.axis
        return opts


class DataConfig(ReadOptions):
    train: str = ""
    """Training data: a .jsonl/.jsonl.gz/.json/.csv/.parquet file, a `datasets` folder, or a hub
    dataset name."""
    validation: str | None = None
    """Validation data (same forms as `train`); when unset, `validation_fraction` of train is
    held out instead."""
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of training prompts held out for validation when `validation` is unset (records
    with the same prompt stay together)."""
    max_length: int = Field(512, ge=2)
    """Tokens per sequence (prompt + response); longer ones are truncated (prompt from the left
    first, then the response from the right) and counted."""
    max_prompt_length: int | None = Field(None, ge=1)
    """Tokens kept from the end of a prompt (generation prompts, and a cap before max_length)."""
    max_tokens_per_batch: int | None = Field(None, ge=1)
    """Token budget per batch (batch size × longest sequence) for dynamic batching; unset means
    fixed-size batches."""

    @model_validator(mode="after")
    def _lengths_fit(self) -> DataConfig:
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be below max_length"
                f" ({self.max_length}) to leave room for the response"
            )
        return self


def read_records(source: str, task: Task, options: ReadOptions) -> ReadResult[Any]:
    """`read(source, task, **options.reader_options())`, and a `DataError` saying why when it
    gives no records (empty file, every row bad or dropped): what every trainer reads with."""
    return require_records(read(source, task, **options.reader_options()), source, task)


@dataclass
class LoadedData(Generic[R]):
    """Records for training and validation, and the read reports behind them."""

    train: list[R]
    validation: list[R]
    reports: dict[str, Any]  # "train" / "validation" -> ReadResult


def load_data(cfg: DataConfig, task: Task, seed: int = 0) -> LoadedData[Any]:
    """Read `cfg.train` (and `cfg.validation`, or hold out `validation_fraction` of train by
    prompt, with `seed`) for `task`. Raises `DataError` on bad rows under `on_error="stop"`,
    and when a source gives no records at all (empty file, every row bad or dropped)."""
    if not cfg.train:
        raise DataError(
            [], header="data.train is empty: give a file, a datasets folder or a hub name"
        )
    train = read_records(cfg.train, task, cfg)
    reports: dict[str, Any] = {"train": train}
    records = train.records
    if cfg.validation:
        val = read_records(cfg.validation, task, cfg)
        reports["validation"] = val
        return LoadedData(records, val.records, reports)
    if cfg.validation_fraction > 0:
        frac = cfg.validation_fraction
        kept, held = split_records(records, (1 - frac, frac), seed=seed)
        return LoadedData(kept, held, reports)
    return LoadedData(records, [], reports)
