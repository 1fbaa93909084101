"""rlhfkit.data: preference and instruction data in, validated and tokenized batches out.

Read (`read_sft`, `read_preferences`, `read_ranked`, `read_prompts` → `ReadResult`), format and
tokenize (`ensure_pad_token`, `format_prompt`, `encode_response`, `encode_*`), batch
(`collate_*`, `pack_sft`, `TokenBudgetSampler`, `split_records`). Module map: `sources` (files
and datasets → rows), `formats` (row → record, per published schema), `readers` (validation,
policies, task conversion), `chat` and `tokenize` (text → ids, truncation), `collate` (ids →
tensors), `sampling` (batches, splits), `config` (`DataConfig`), `cli` (`rlhfkit data inspect`).
"""

from rlhfkit.data.chat import encode_prompt, encode_response, ensure_pad_token, format_prompt
from rlhfkit.data.collate import (
    collate_pairs,
    collate_prompts,
    collate_ranked,
    collate_sft,
    pack_sft,
)
from rlhfkit.data.formats import split_hh_transcript, strip_citations
from rlhfkit.data.problems import DataError, Problem, ReadResult
from rlhfkit.data.readers import (
    expand_pairs,
    read,
    read_preferences,
    read_prompts,
    read_ranked,
    read_sft,
)
from rlhfkit.data.sampling import (
    TokenBudgetSampler,
    fixed_batches,
    padding_fraction,
    split_records,
)
from rlhfkit.data.tokenize import (
    EncodedPair,
    EncodedPrompt,
    EncodedRanked,
    EncodedSFT,
    encode_pairs,
    encode_prompts,
    encode_ranked,
    encode_sft,
)

__all__ = [
    "DataError",
    "EncodedPair",
    "EncodedPrompt",
    "EncodedRanked",
    "EncodedSFT",
    "Problem",
    "ReadResult",
    "TokenBudgetSampler",
    "collate_pairs",
    "collate_prompts",
    "collate_ranked",
    "collate_sft",
    "encode_pairs",
    "encode_prompt",
    "encode_prompts",
    "encode_ranked",
    "encode_response",
    "encode_sft",
    "ensure_pad_token",
    "expand_pairs",
    "fixed_batches",
    "format_prompt",
    "pack_sft",
    "padding_fraction",
    "read",
    "read_preferences",
    "read_prompts",
    "read_ranked",
    "read_sft",
    "split_hh_transcript",
    "split_records",
    "strip_citations",
]
