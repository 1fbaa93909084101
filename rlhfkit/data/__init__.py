"""rlhfkit.data: preference and instruction data in, validated and tokenized batches out.

Read (`read_sft`, `read_preferences`, `read_ranked`, `read_prompts`, `read_unpaired` →
`ReadResult`), format and
tokenize (`ensure_pad_token`, `format_prompt`, `encode_response`, `end_token_id`,
`stop_token_ids`, `encode_*`), batch (`collate_*`,
`pack_sft`, `collate_shared_prompt`, `TokenBudgetSampler`, `epoch_batches`, `split_records`),
configure (`ReadOptions`, the reading part of every trainer's data config; `DataConfig`,
`load_data`, `read_records`). Module map: `sources` (files and datasets → rows), `formats` (row →
record, per published schema), `readers` (validation, policies, task conversion), `chat` and
`tokenize` (text → ids, truncation), `collate` (ids → tensors), `sampling` (batches, splits),
`config`, `cli` (`rlhfkit data inspect`).

Names are imported on first use (PEP 562 `__getattr__`), so `rlhfkit --help`, which loads the
`data` command group, does not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "rlhfkit.data.chat": [
        "encode_prompt",
        "encode_response",
        "end_token_id",
        "ensure_pad_token",
        "format_prompt",
        "prompt_special_tokens",
        "stop_token_ids",
    ],
    "rlhfkit.data.collate": [
        "collate_pairs",
        "collate_prompts",
        "collate_ranked",
        "collate_sft",
        "pack_sft",
    ],
    "rlhfkit.data.config": ["DataConfig", "LoadedData", "ReadOptions", "load_data", "read_records"],
    "rlhfkit.data.formats": ["split_hh_transcript", "strip_citations"],
    "rlhfkit.data.problems": ["DataError", "Problem", "ReadResult"],
    "rlhfkit.data.readers": [
        "expand_pairs",
        "read",
        "read_preferences",
        "read_prompts",
        "read_ranked",
        "read_sft",
        "read_unpaired",
    ],
    "rlhfkit.data.sampling": [
        "TokenBudgetSampler",
        "fixed_batches",
        "padding_fraction",
        "epoch_batches",
        "plan_steps",
        "split_records",
    ],
    "rlhfkit.data.shared_prompt": ["collate_shared_prompt", "shared_length"],
    "rlhfkit.data.tokenize": [
        "EncodedPair",
        "EncodedPrompt",
        "EncodedRanked",
        "EncodedSFT",
        "encode_pairs",
        "encode_prompts",
        "encode_ranked",
        "encode_replies",
        "encode_sft",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'rlhfkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
