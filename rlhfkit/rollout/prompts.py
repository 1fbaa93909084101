"""Prompts for every online algorithm and the evaluation: one reading, formatting and encoding
path, and the seeded order in which a trainer deals them out.

Implementation details:

1. One encoding path: `data.encode_prompts` (chat template, else the HH format, or raw text;
   special tokens as `data.prompt_special_tokens` says; truncation keeps the *end* of a long
   prompt and its BOS). The evaluation's `sample_batches` and every trainer use it, so in-loop
   evaluation and `rlhfkit eval` see the same ids.
2. Each prompt keeps its `PromptRecord` (dialogue, source file:line, metadata such as the
   simulated world's task or a reference answer), which goes to the reward with the replies.
3. `next_batch(n)` deals seeded shuffled passes over the prompts (the remainder of a pass is
   dropped, so every pass is a permutation); its state is the data position a checkpoint stores.
4. `collate(index, pad_id, group_size=G)` left-pads the prompts and repeats each G times,
   contiguously (GRPO / RLOO groups: rows g·G … g·G + G − 1 share prompt g).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from rlhfkit.data import EncodedPrompt, encode_prompts, format_prompt
from rlhfkit.data.config import ReadOptions
from rlhfkit.types import PromptRecord

__all__ = ["PromptDataConfig", "PromptSource", "read_prompt_source"]


class PromptDataConfig(ReadOptions):
    """Where the prompts come from and how they are read (`format`, `columns`, `on_error`, ...:
    the reader options every trainer shares, `data.ReadOptions`) and formatted."""

    train: str = ""
    """Prompts for rollouts: any file `rlhfkit.data.read_prompts` reads (JSONL with a `prompt`
    field, HH transcripts, preference files, alpaca / sharegpt files, ...)."""
    prompt_template: Literal["chat", "raw"] = "chat"
    """chat: the tokenizer's chat template, else the HH `Human:/Assistant:` format; raw: a
    one-turn prompt's text and the reply's text as they are, plus EOS (base models, plain
    continuation data, the throughput benchmarks; see `rlhfkit.data.chat`)."""
    max_prompt_length: int = Field(256, ge=1)
    """Tokens kept from the end of each prompt (its BOS is kept)."""


@dataclass
class PromptSource:
    """Prompt records, the text the policy sees, their ids, and the dealing order."""

    records: list[PromptRecord]
    texts: list[str]
    encoded: list[EncodedPrompt]
    generator: torch.Generator = field(default_factory=torch.Generator)
    order: list[int] = field(default_factory=list)
    cursor: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def next_batch(self, n: int) -> list[int]:
        """The next `n` prompt indices of the current shuffled pass (a new pass when short)."""
        if n > len(self):
            raise ValueError(f"asked for {n} prompts per batch but there are only {len(self)}")
        if self.cursor + n > len(self.order):
            self.order = torch.randperm(len(self), generator=self.generator).tolist()
            self.cursor = 0
        batch = self.order[self.cursor : self.cursor + n]
        self.cursor += n
        return batch

    def collate(
        self, index: Sequence[int], pad_id: int, group_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B·G, P) ids and mask (True = valid), each prompt repeated G times."""
        rows = [i for i in index for _ in range(group_size)]
        width = max(len(self.encoded[i].input_ids) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            n = len(self.encoded[i].input_ids)
            ids[r, width - n :] = torch.tensor(self.encoded[i].input_ids, dtype=torch.long)
            mask[r, width - n :] = True
        return ids, mask

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.cursor = list(state["order"]), int(state["cursor"])
        self.generator.set_state(state["rng"])


def prompt_source(
    records: Sequence[PromptRecord],
    tokenizer: Any,
    max_prompt_length: int,
    template: Literal["chat", "raw"] = "chat",
    seed: int = 0,
) -> PromptSource:
    """Format and encode `records` through `data.encode_prompts` (one path for all callers)."""
    texts = []
    for rec in records:
        try:
            texts.append(format_prompt(tokenizer, rec.prompt, template))
        except ValueError as e:
            raise ValueError(f"{rec.source}: prompt: {e}") from None
    encoded = encode_prompts(tokenizer, list(records), max_prompt_length, template)
    return PromptSource(list(records), texts, encoded, torch.Generator().manual_seed(seed))


def read_prompt_source(
    path: str,
    tokenizer: Any,
    cfg: PromptDataConfig,
    seed: int = 0,
    limit: int | None = None,
) -> PromptSource:
    """Read a prompt file (every bad row reported by file and line), keep the first `limit`."""
    from rlhfkit.data import read_records

    records = read_records(path, "prompts", cfg).records  # a DataError says why when empty
    records = records[:limit] if limit is not None else records
    return prompt_source(records, tokenizer, cfg.max_prompt_length, cfg.prompt_template, seed)
