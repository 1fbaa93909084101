"""What the SmolLM2 benchmarks share: where the model is, the fixed HH split, and how a
benchmark reports (peak RSS, a JSON line, the command that reproduces it).

The split is by dialogue: pairs whose prompt (the conversation up to the last Assistant turn)
is the same land on the same side (`rlhfkit.data.split_records` keyed by prompt), 80 / 20 with
seed 0, so the RM, DPO and PPO benchmarks train and evaluate on the same pairs.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import sys
from pathlib import Path

from fetch_smollm2 import default_dir

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
HH = SHARED / "data" / "hh-rlhf" / "helpful-online-test.jsonl.gz"
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


def model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder; exits with the command that makes it."""
    path = Path(os.environ.get("SMOLLM2_DIR", default_dir()))
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path}: no model; run: python benchmarks/real/fetch_smollm2.py")
    return path


def hh_split(
    out: Path, train_pairs: int | None = None, held_out_pairs: int | None = None
) -> tuple[Path, Path, dict]:
    """Write the fixed train / held-out HH pairs into `out` (generic JSONL: prompt messages,
    chosen, rejected), the
    training side cut to its first `train_pairs` pairs and the held-out side to its first
    `held_out_pairs` when given (a smaller run, the same split). Returns both paths and counts."""
    from rlhfkit.data import read_preferences, split_records

    if not HH.is_file():
        raise SystemExit(f"needs {HH} (the shared folder beside the repository)")
    result = read_preferences(HH, "hh", on_error="skip")  # a few real rows are broken
    train, held = split_records(
        result.records, (1 - HELD_OUT_FRACTION, HELD_OUT_FRACTION), seed=SPLIT_SEED
    )
    if train_pairs is not None:
        train = train[:train_pairs]
    if held_out_pairs is not None:
        held = held[:held_out_pairs]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("held_out", held)):
        path = out / f"hh_{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for p in part:
                prompt = [{"role": m.role, "content": m.content} for m in p.prompt]
                f.write(json.dumps({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected}))
                f.write("\n")
        paths.append(path)
    counts = {
        "pairs_read": len(result.records),
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "train_dialogues": len({str(p.prompt) for p in train}),
        "held_out_dialogues": len({str(p.prompt) for p in held}),
    }
    return paths[0], paths[1], counts


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def report(figures: dict, out: Path | None = None) -> None:
    """Print the figures (indented) and one JSON line; append that line to `out` if given."""
    figures = {**figures, "command": command()}
    print(json.dumps(figures, indent=2))
    line = json.dumps(figures)
    print(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
