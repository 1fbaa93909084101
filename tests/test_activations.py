"""`models.activations.gelu_tanh`: the tanh GELU computed in pieces equals the definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit.models.activations import CHUNK, FastGELUTanh, gelu_tanh, use_fast_gelu


def definition(x: torch.Tensor) -> torch.Tensor:
    """½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in float64."""
    x = x.double()
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("shape", [(3, 5, CHUNK // 8 + 7), (CHUNK * 2 + 5,), (4, CHUNK // 16)])
def test_pieces_equal_the_definition_values_and_gradients(shape):
    """Several pieces and a last partial one, a non-contiguous input, values and gradients:
    within float32 rounding of the float64 definition, as close as PyTorch's fused kernel."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3).requires_grad_()
    y = gelu_tanh(x)
    assert y.grad_fn is not None and "GeluTanh" in type(y.grad_fn).__name__  # the piecewise path
    exact = definition(x.detach())
    fused_err = (F.gelu(x.detach(), approximate="tanh").double() - exact).abs().max()
    err = (y.detach().double() - exact).abs().max()
    assert err <= max(2 * fused_err, 1e-6), (err, fused_err)
    upstream = torch.randn(shape, generator=g)
    (y * upstream).sum().backward()
    x64 = x.detach().double().requires_grad_()
    (definition(x64) * upstream.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    fused_grad = torch.ops.aten.gelu_backward(upstream, x.detach(), approximate="tanh")
    assert torch.equal(x.grad, fused_grad)  # the backward is PyTorch's own

    strided = x.detach().transpose(0, -1) if x.dim() > 1 else x.detach()[::2]
    torch.testing.assert_close(
        gelu_tanh(strided).double(), definition(strided), rtol=0, atol=2 * fused_err.item() + 1e-7
    )


def test_other_dtypes_small_inputs_and_compiled_code_use_the_fused_kernel():
    x = torch.randn(CHUNK)
    assert torch.equal(gelu_tanh(x.bfloat16()), F.gelu(x.bfloat16(), approximate="tanh"))
    assert torch.equal(gelu_tanh(x[:100]), F.gelu(x[:100], approximate="tanh"))
    assert torch.equal(gelu_tanh(x.double()), F.gelu(x.double(), approximate="tanh"))


def test_use_fast_gelu_swaps_gpt2_activations_and_keeps_the_outputs():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_embd=256, n_layer=2, n_head=4, n_positions=64)
    cfg.activation_function = "gelu_pytorch_tanh"
    model = GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 50, (4, 64))
    before = model(ids).logits
    assert use_fast_gelu(model) == 2
    assert all(isinstance(block.mlp.act, FastGELUTanh) for block in model.transformer.h)
    torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)
    assert model.config.activation_function == "gelu_pytorch_tanh"  # a saved folder is plain HF
