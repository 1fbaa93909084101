"""Collators: right-padded training batches, left-padded prompt batches, masks True = valid,
the (2B, T) pair layout, prompt-major ranked batches, packing, and the documented loss
convention checked against unpadded per-sequence log-probabilities of a tiny model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.data import (
    EncodedPair,
    EncodedPrompt,
    EncodedRanked,
    EncodedSFT,
    collate_pairs,
    collate_prompts,
    collate_ranked,
    collate_sft,
    pack_sft,
)

PAD = 0

seq_st = st.lists(st.integers(1, 50), min_size=2, max_size=12)
sft_st = st.lists(
    seq_st.flatmap(lambda s: st.tuples(st.just(s), st.integers(1, len(s) - 1))),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(sft_st)
def test_collate_sft_matches_naive_definition(rows: list[tuple[list[int], int]]) -> None:
    items = [EncodedSFT(s, p) for s, p in rows]
    batch = collate_sft(items, PAD)
    width = max(len(s) for s, _ in rows)
    assert batch["input_ids"].shape == (len(rows), width)
    for b, (s, p) in enumerate(rows):
        for t in range(width):
            valid = t < len(s)
            assert batch["input_ids"][b, t].item() == (s[t] if valid else PAD)
            assert batch["attention_mask"][b, t].item() is valid
            assert batch["response_mask"][b, t].item() is (p <= t < len(s))
    assert batch["attention_mask"].dtype == torch.bool == batch["response_mask"].dtype


@settings(max_examples=60, deadline=None)
@given(st.lists(seq_st, min_size=1, max_size=6))
def test_collate_prompts_left_pads(seqs: list[list[int]]) -> None:
    batch = collate_prompts([EncodedPrompt(s, len(s)) for s in seqs], PAD)
    width = max(len(s) for s in seqs)
    for b, s in enumerate(seqs):
        pad = width - len(s)
        assert batch["input_ids"][b].tolist() == [PAD] * pad + s
        assert batch["attention_mask"][b].tolist() == [False] * pad + [True] * len(s)


def test_pad_id_equal_to_real_token_does_not_change_masks() -> None:
    # EOS (here 2) doubles as pad: validity must still come from the lengths.
    items = [EncodedSFT([5, 6, 2], 1), EncodedSFT([5, 2], 1)]
    batch = collate_sft(items, pad_id=2)
    assert batch["attention_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["response_mask"].tolist() == [[False, True, True], [False, True, False]]


def test_collate_pairs_layout_and_margin() -> None:
    items = [
        EncodedPair([1, 7, 8], [1, 7, 9, 9, 9], 2, margin=0.5),
        EncodedPair([1, 3, 3, 4], [1, 3, 3, 5], 3, margin=2.0),
    ]
    batch = collate_pairs(items, PAD)
    assert batch["num_pairs"] == 2
    assert batch["input_ids"].tolist() == [
        [1, 7, 8, 0, 0],
        [1, 3, 3, 4, 0],
        [1, 7, 9, 9, 9],
        [1, 3, 3, 5, 0],
    ]
    assert batch["response_mask"].tolist() == [
        [False, False, True, False, False],
        [False, False, False, True, False],
        [False, False, True, True, True],
        [False, False, False, True, False],
    ]
    assert torch.equal(batch["margin"], torch.tensor([0.5, 2.0]))
    assert "margin" not in collate_pairs([EncodedPair([1, 2], [1, 3], 1)], PAD)
    with pytest.raises(ValueError, match="some pairs have a margin"):
        collate_pairs([items[0], EncodedPair([1, 2], [1, 3], 1)], PAD)


def test_collate_ranked_is_prompt_major_best_first() -> None:
    a = EncodedRanked(([1, 10], [1, 11, 11], [1, 12]), 1)
    b = EncodedRanked(([2, 2, 20], [2, 2, 21], [2, 2, 22, 22]), 2)
    batch = collate_ranked([a, b], PAD)
    assert (batch["num_prompts"], batch["group_size"]) == (2, 3)
    rows = [r[m].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    assert rows == [*map(list, a.sequences), *map(list, b.sequences)]
    with pytest.raises(ValueError, match="K differs"):
        collate_ranked([a, EncodedRanked(([1, 2], [1, 3]), 1)], PAD)


def test_pack_sft_segments_positions_and_targets() -> None:
    items = [EncodedSFT([1, 2, 3], 1), EncodedSFT([4, 5, 6, 7], 2), EncodedSFT([8, 9], 1)]
    packed = pack_sft(items, max_length=6)
    # First fit in order: [a, c] (3 + 2) then [b] (4).
    assert packed["input_ids"].tolist() == [[1, 2, 3, 8, 9], [4, 5, 6, 7, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert packed["segment_ids"].tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    assert packed["response_mask"].tolist() == [
        [False, True, True, False, True],
        [False, False, True, True, False],
    ]
    assert packed["attention_mask"].tolist() == [[True] * 5, [True] * 4 + [False]]
    with pytest.raises(ValueError, match="max_length"):
        pack_sft([EncodedSFT(list(range(9)), 1)], max_length=6)


def test_loss_convention_matches_unpadded_per_sequence_logprobs() -> None:
    """Summing log p(input_ids[:, 1:]) under response_mask[:, 1:] on the padded batch equals, per
    row, the log-probability of the response given the prompt computed on the unpadded sequence."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = LlamaForCausalLM(cfg).eval()
    items = [
        EncodedSFT([1, 5, 6, 7, 8, 2], 2),
        EncodedSFT([1, 9, 2], 2),
        EncodedSFT([1, 3, 4, 2], 1),
    ]
    batch = collate_sft(items, pad_id=PAD)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    tok_logp = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    batched = (tok_logp * batch["response_mask"][:, 1:]).sum(-1)
    for b, it in enumerate(items):
        ids = torch.tensor([it.input_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        naive = sum(lp[t - 1, it.input_ids[t]].item() for t in range(it.prompt_length, it.length))
        assert batched[b].item() == pytest.approx(naive, abs=1e-5)
