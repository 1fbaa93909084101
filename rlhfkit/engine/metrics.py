"""Metrics: one JSON line per logged step in RUN/metrics.jsonl (always), plus the trackers
Accelerate supports (TensorBoard, Weights & Biases, MLflow) when the config asks for them."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than crash
    return value


class MetricsLogger:
    """Appends `{"step": N, "time": seconds since start, **metrics}` lines; line-buffered so
    a killed run keeps everything logged before the kill."""

    def __init__(self, path: str | Path, accelerator: Any = None, enabled: bool = True):
        self.path = Path(path)
        self.accelerator = accelerator
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._file = open(self.path, "a", encoding="utf-8", buffering=1) if enabled else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.perf_counter() - self.t0, 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(numeric, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl back (tolerates a torn last line from a killed run)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class TokenRate:
    """Training throughput between two log lines: tokens counted with `add`, wall time from
    the previous `take`, less the time spent inside `paused()` (evaluation, checkpoints), so
    `perf/tokens_per_s` is the rate of the training steps alone."""

    def __init__(self) -> None:
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - t

    def take(self, world: int = 1) -> dict[str, float]:
        """The window's metrics (tokens of all `world` processes), and a new window."""
        now = time.perf_counter()
        tokens = self.tokens * world
        out = {"perf/tokens": tokens, "perf/tokens_per_s": tokens / max(now - self.start, 1e-9)}
        self.start, self.tokens = now, 0
        return out
