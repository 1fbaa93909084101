"""`final_hidden_at`: the last block computed at chosen columns only equals the full body read
at those columns, forward and backward, for every mask form the trainers pass.

Oracle: the same body run in full (`query=None`) and gathered at the columns.
"""

from __future__ import annotations

import pytest
import torch

from rlhfkit.data import EncodedPair, collate_shared_prompt
from rlhfkit.models import final_hidden_at, position_ids_from_mask
from rlhfkit.models.partial import _gpt2_blocks
from rlhfkit.models.tiny import build_tiny_model


def _body(arch: str, attn: str, dropout: float = 0.0):
    torch.manual_seed(0)
    model = build_tiny_model(arch, "nano", vocab_size=97, seed=3)
    model.config._attn_implementation = attn
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
    return model.base_model.eval()


def _batch(side: str, b: int = 4, t: int = 11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    for row, n_pad in enumerate([0, 3, 1, 5][:b]):
        if side == "left":
            mask[row, :n_pad] = False
        elif side == "right" and n_pad:
            mask[row, -n_pad:] = False
    return ids, mask


def _check(body, ids, mask4_or_2, positions, query, valid):
    """Forward values and parameter gradients of Σ w·h at the valid `query` columns: partial ≡
    full (a padding query's output is garbage in both, and never read)."""
    weight = torch.randn(query.shape[0], query.shape[1], body.config.hidden_size)
    weight = weight * valid.gather(1, query)[..., None]
    results = []
    for q in (None, query):
        body.zero_grad()
        hidden = final_hidden_at(body, ids, mask4_or_2, positions, q)
        if q is None:
            hidden = hidden.gather(1, query[..., None].expand(-1, -1, hidden.shape[-1]))
        (hidden * weight).sum().backward()
        grads = {n: p.grad.clone() for n, p in body.named_parameters() if p.grad is not None}
        results.append((hidden.detach() * valid.gather(1, query)[..., None], grads))
    (full, full_grads), (part, part_grads) = results
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    assert part_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        scale = float(grad.abs().max())  # sums over tokens: compare to the largest entry
        torch.testing.assert_close(part_grads[name], grad, atol=1e-5 * max(scale, 1.0), rtol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["left", "right", "none"])
def test_response_columns_equal_the_full_body(attn, side):
    body = _body("gpt2", attn)
    assert _gpt2_blocks(body) is not None  # the partial path is the one under test
    ids, mask = _batch(side)
    query = torch.arange(4, ids.shape[1] - 1).expand(ids.shape[0], -1)  # PPO: P − 1 … T − 2
    _check(body, ids, mask.long(), position_ids_from_mask(mask), query, mask)
    if side == "none":  # no mask at all: the body's causal fast path passes none to the block
        _check(body, ids, None, position_ids_from_mask(mask), query, mask)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_scattered_columns_of_packed_rows_equal_the_full_body(attn):
    """The reward model's shared-prompt rows: a (B, 1, T, T) block mask, two reply ends per row."""
    body = _body("gpt2", attn)
    pairs = [
        EncodedPair([5, 6, 7, 8, 9], [5, 6, 7, 30, 31, 32], 3, source="a"),
        EncodedPair([10, 11, 12, 13], [10, 11, 40, 41, 42, 43, 44], 2, source="b"),
    ]
    batch = collate_shared_prompt(pairs, pad_id=0)
    allowed = batch["allowed"][:, None]
    if attn == "eager":
        allowed = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    rows, cols = batch["score_index"].unbind(-1)
    query = torch.stack([cols[rows == r] for r in range(len(pairs))])
    _check(body, batch["input_ids"], allowed, batch["position_ids"], query, batch["attention_mask"])


def test_other_bodies_and_active_dropout_run_in_full_with_the_same_result():
    llama = _body("llama", "sdpa")
    assert _gpt2_blocks(llama) is None
    ids, mask = _batch("left")
    query = torch.arange(4, ids.shape[1] - 1).expand(ids.shape[0], -1)
    _check(llama, ids, mask.long(), position_ids_from_mask(mask), query, mask)
    noisy = _body("gpt2", "sdpa", dropout=0.1).train()
    assert _gpt2_blocks(noisy) is None
    assert _gpt2_blocks(noisy.eval()) is not None


def test_the_last_block_runs_at_the_query_columns_only():
    body = _body("gpt2", "sdpa")
    ids, mask = _batch("right")
    seen = []
    hook = body.h[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    query = torch.tensor([[2], [3], [4], [5]])
    final_hidden_at(body, ids, mask.long(), position_ids_from_mask(mask), query)
    hook.remove()
    assert seen == [1]
    assert type(body.h[-1]).__name__ == "GPT2Block"  # restored after the call
