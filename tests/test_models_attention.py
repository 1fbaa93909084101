"""`models.attention`: SDPA that runs bf16 inputs in float32 on CPU.

Oracles: transformers' own "sdpa" (identical results in float32), and
`F.scaled_dot_product_attention` on the upcast inputs (the bf16 case, to the bit).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.models import ModelConfig, build_scalar_model, load_policy
from rlhfkit.models.attention import ATTENTION_NAME, attention, use_fp32_cpu_attention
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer


def _qkv(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 16, generator=g).to(dtype) for _ in range(3))
    mask = torch.ones(24, 24, dtype=torch.bool).tril()[None, None].expand(2, 1, 24, 24).clone()
    mask[1, :, :, :5] = False  # left padding in row 1
    mask[1, :, :5, 0] = True  # padded queries see one key (finite rows, as transformers does)
    return q, k, v, mask


def test_bf16_inputs_are_computed_in_float32_on_cpu():
    q, k, v, mask = _qkv(torch.bfloat16)
    out = attention(q, k, v, attn_mask=mask, scale=0.3)
    upcast = F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3
    ).to(torch.bfloat16)
    in_bf16 = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, upcast)
    assert not torch.equal(out, in_bf16)  # the plain bf16 kernel rounds differently
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast does not push it back to bf16
        assert torch.equal(attention(q, k, v, attn_mask=mask, scale=0.3), upcast)


def test_float32_is_plain_sdpa():
    q, k, v, mask = _qkv(torch.float32)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(attention(q, k, v, attn_mask=mask), expected)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("attn")
    tok = train_tokenizer(["the cat sat on the mat", "a dog ran"] * 20, vocab_size=120)
    out = {}
    for arch in ("gpt2", "llama"):
        model = build_tiny_model(arch, "nano", tokenizer=tok, seed=1)
        out[arch] = save_tiny_model(model, root / arch, tok)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loaded_models_use_it_and_match_transformers_sdpa(folders, arch):
    cfg = ModelConfig(name_or_path=str(folders[arch]))
    policy = load_policy(cfg).eval()
    assert policy.config._attn_implementation == ATTENTION_NAME
    assert build_scalar_model(cfg).config._attn_implementation == ATTENTION_NAME
    plain = load_policy(cfg).eval()
    plain.set_attn_implementation("sdpa")
    ids = torch.randint(3, 100, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        assert torch.equal(
            policy(ids, attention_mask=mask).logits, plain(ids, attention_mask=mask).logits
        )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_under_bf16_autocast_the_kernel_sees_float32(folders, arch, monkeypatch):
    seen: list[torch.dtype] = []
    kernel = F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.dtype)
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    cfg = ModelConfig(name_or_path=str(folders[arch]))
    ids = torch.randint(3, 100, (2, 7))
    cases = [(ATTENTION_NAME, torch.float32)]
    if arch == "gpt2":  # (Llama's rotary embedding already hands float32 q, k to plain sdpa)
        cases.append(("sdpa", torch.bfloat16))
    for implementation, expected in cases:
        model = load_policy(cfg).eval()
        model.set_attn_implementation(implementation)
        seen.clear()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids).logits
        assert seen and set(seen) == {expected}, implementation
        assert torch.isfinite(logits).all()


def test_other_implementations_are_left_alone(folders):
    model = load_policy(ModelConfig(name_or_path=str(folders["gpt2"]), attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"
    assert use_fp32_cpu_attention(model).config._attn_implementation == "eager"
