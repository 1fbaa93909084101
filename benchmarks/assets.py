"""The anchor workload's assets, built offline and deterministically from a seed.

The speed benchmarks (`ppo_throughput`, `pg_throughput`, `rm_throughput`, `dpo_throughput`,
`dpo_step_ab`, `ppo_scaling`) run on one fixed workload, the one TRL's trainers were measured on
for the ratios in the docs. This module writes it:

    DIR/tokenizer/          byte-level BPE, 4,096 tokens (`<|endoftext|>` = BOS = EOS = UNK, `<|pad|>`)
    DIR/policy/             GPT-2, 4 layers, 4 heads, d = 256, 256 positions, random init (seed)
    DIR/reward/             GPT2ForSequenceClassification, one label, the same size (seed + 1)
    DIR/prompts.jsonl       512 prompts of 24–32 tokens                  {"prompt"}
    DIR/preferences.jsonl   1,024 pairs                                 {"prompt", "chosen", "rejected"}
    DIR/manifest.json       seed, sizes, library versions and the sha256 of every file

The text is the documentation every CPython carries (`pydoc_data.topics`, what `help()` shows),
so nothing is downloaded. Prompts are runs of consecutive words whose token count is drawn from
24–32; a pair's chosen reply is the text that follows its prompt (32–48 tokens), the rejected
one a run of words from elsewhere with the same token budget, shuffled. Everything follows from
the seed (default 1234) and the Python, tokenizers and torch versions (the manifest records
them); two builds on one machine are byte-identical.

    python -m benchmarks.assets --out runs/bench_assets     # ≈ 20 s on 2 cores

The benchmarks call `anchor_assets(DIR)`, which builds the folder the first time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "runs" / "bench_assets"
EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass(frozen=True)
class Spec:
    seed: int = 1234
    vocab_size: int = 4096
    prompts: int = 512
    pairs: int = 1024
    prompt_tokens: tuple[int, int] = (24, 32)  # inclusive
    reply_tokens: tuple[int, int] = (32, 48)  # inclusive
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_positions: int = 256


def corpus() -> str:
    """The pydoc topics, in sorted key order, separated by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].replace("\r\n", "\n").strip("\n") for k in sorted(topics)) + "\n"


def prose(text: str) -> list[str]:
    """The paragraphs that read as English sentences, each on one line: no indented code or
    grammar, at least 120 characters, ≥ 85 % letters and spaces, not a table or a rule."""
    keep = []
    for block in re.split(r"\n\s*\n", text):
        if any(line.startswith((" ", "\t")) for line in block.split("\n")):
            continue
        flat = re.sub(r"\s+", " ", block).strip()
        letters = sum(ch.isalpha() or ch == " " for ch in flat)
        if (
            len(flat) >= 120
            and letters >= 0.85 * len(flat)
            and flat.count("=") <= 2
            and flat.count("*") <= 4
            and not flat.startswith(("+", "|", "-"))
        ):
            keep.append(flat)
    return keep


def train_tokenizer(text: str, spec: Spec) -> Any:
    """Byte-level BPE trained on the corpus line by line, as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(text.split("\n"), trainer=trainer, length=text.count("\n") + 1)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=spec.n_positions,
        padding_side="right",
        truncation_side="right",
    )


def save_models(tokenizer: Any, out: Path, spec: Spec) -> dict[str, int]:
    """The policy (seed) and the reward model (seed + 1), each saved with the tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    eos, pad = tokenizer.convert_tokens_to_ids([EOS, PAD])
    dims = dict(
        vocab_size=spec.vocab_size,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_embd=spec.n_embd,
        n_positions=spec.n_positions,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(spec.seed)
    policy = GPT2LMHeadModel(GPT2Config(**dims))
    for key, value in (("pad_token_id", pad), ("eos_token_id", eos), ("bos_token_id", eos)):
        setattr(policy.generation_config, key, value)
    torch.manual_seed(spec.seed + 1)
    reward = GPT2ForSequenceClassification(GPT2Config(num_labels=1, **dims))
    sizes = {}
    for name, model in (("policy", policy), ("reward", reward)):
        model.save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
        sizes[name] = sum(p.numel() for p in model.parameters())
    return sizes


class _Windows:
    """Runs of consecutive corpus words measured in tokens."""

    def __init__(self, paragraphs: list[str], tokenizer: Any) -> None:
        self.words = " ".join(paragraphs).split(" ")
        self.tokenizer = tokenizer

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def take(self, start: int, least: int, most: int, space: bool = False):
        """(text, tokens, next word) of the shortest run from `start` with ≥ `least` tokens, or
        None when that run has more than `most` (or the words run out first)."""
        for n in range(1, 80):
            if start + n > len(self.words):
                return None
            text = (" " if space else "") + " ".join(self.words[start : start + n])
            count = self.tokens(text)
            if count >= least:
                return (text, count, start + n) if count <= most else None
        return None


def sample_rows(paragraphs: list[str], tokenizer: Any, spec: Spec) -> tuple[list, list]:
    """(prompt rows, preference rows), drawn from `random.Random(spec.seed)`."""
    rng = random.Random(spec.seed)
    w = _Windows(paragraphs, tokenizer)
    last = len(w.words) - 200
    (p_lo, p_hi), (r_lo, r_hi) = spec.prompt_tokens, spec.reply_tokens

    prompts: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(prompts) < spec.prompts:
        got = w.take(rng.randrange(last), rng.randint(p_lo, p_hi), p_hi)
        if got is not None and got[0] not in seen:
            seen.add(got[0])
            prompts.append({"prompt": got[0]})

    pairs: list[dict[str, str]] = []
    seen = set()
    while len(pairs) < spec.pairs:
        # 1. a prompt, 2. the text after it, 3. a shuffled run from elsewhere of that length
        prompt = w.take(rng.randrange(last), rng.randint(p_lo, p_hi), p_hi)
        if prompt is None or prompt[0] in seen:
            continue
        chosen = w.take(prompt[2], rng.randint(r_lo, r_hi), r_hi, space=True)
        if chosen is None:
            continue
        rejected = None
        for _ in range(100):
            other = w.take(rng.randrange(last), chosen[1], r_hi, space=True)
            if other is None:
                continue
            words = other[0].strip().split(" ")
            rng.shuffle(words)
            text = " " + " ".join(words)
            if r_lo <= w.tokens(text) <= r_hi + 8 and text != chosen[0]:
                rejected = text
                break
        if rejected is None:
            continue
        seen.add(prompt[0])
        pairs.append({"prompt": prompt[0], "chosen": chosen[0], "rejected": rejected})
    return prompts, pairs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path, spec: Spec = Spec()) -> Path:
    """Write the assets into `out` (made if needed) and return it."""
    import tokenizers
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    text = corpus()
    (out / "corpus.txt").write_text(text, encoding="utf-8")
    tokenizer = train_tokenizer(text, spec)
    tokenizer.save_pretrained(out / "tokenizer")
    params = save_models(tokenizer, out, spec)
    prompts, pairs = sample_rows(prose(text), tokenizer, spec)
    for name, rows in (("prompts.jsonl", prompts), ("preferences.jsonl", pairs)):
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "spec": spec.__dict__,
        "corpus": f"CPython {sys.version.split()[0]} pydoc_data.topics",
        "params": params,
        "rows": {"prompts": len(prompts), "preferences": len(pairs)},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "sha256": {str(p.relative_to(out)): _sha256(p) for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def anchor_assets(folder: str | Path | None = None) -> Path:
    """The assets folder, built first when it holds no manifest (`DEFAULT_DIR` when None)."""
    path = Path(folder) if folder else DEFAULT_DIR
    if not (path / "manifest.json").is_file():
        print(f"building the anchor assets in {path} (once)", file=sys.stderr, flush=True)
        build(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=Spec.seed)
    args = ap.parse_args()
    out = build(args.out, Spec(seed=args.seed))
    print(
        json.dumps({"assets": str(out), **json.loads((out / "manifest.json").read_text())["rows"]})
    )


if __name__ == "__main__":
    main()
