"""The run directory layout, the same for every command:

RUN/config.yaml        the resolved config (exactly what ran)
RUN/meta.json          rlhfkit version, git commit of the code, command line, start time
RUN/metrics.jsonl      one JSON object per logged step (always)
RUN/checkpoints/       step_00000100/ … written atomically, `latest` names the newest
RUN/samples/           generations, one JSONL file per logging point
RUN/tensorboard/       when asked for
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

import rlhfkit
from rlhfkit.config import to_yaml
from rlhfkit.engine.checkpoint import atomic_write_text


def code_version() -> str:
    """The git commit of the installed rlhfkit source (with `-dirty`), or `unknown`."""
    root = Path(rlhfkit.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self.metrics_file = self.path / "metrics.jsonl"
        self.config_file = self.path / "config.yaml"

    def create(self) -> RunDir:
        for d in (self.path, self.checkpoints, self.samples):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def save_config(self, cfg: BaseModel) -> None:
        atomic_write_text(self.config_file, to_yaml(cfg))
        meta = {
            "rlhfkit_version": rlhfkit.__version__,
            "code_version": code_version(),
            "config_class": type(cfg).__name__,
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(self.path / "meta.json", json.dumps(meta, indent=2) + "\n")

    def write_samples(self, name: str, rows: list[dict]) -> Path:
        path = self.samples / f"{name}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path
