"""Run by tests/test_distributed.py under `python -m torch.distributed.run --nproc_per_node 2`:
rlhfkit's sliced forward (`response_logprobs`, through `engine.wrapped_forward`) and sampling
(`generate` inside `engine.gathered`) and the weights a rollout engine is pushed
(`rollout.policy_weights`) on a tiny GPT-2 sharded with torch's FSDP2 (`fully_shard`,
gloo), against the same model unsharded in this process. Prints one JSON line."""

from __future__ import annotations

import copy
import json

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfkit.engine import gathered
from rlhfkit.rollout import (
    RolloutConfig,
    generate,
    policy_weights,
    response_logprobs,
    row_seeds,
)


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    whole = GPT2LMHeadModel(cfg).eval()
    sharded = copy.deepcopy(whole)
    for block in sharded.transformer.h:
        fully_shard(block)
    fully_shard(sharded)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 40, (4, 12), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :3] = False  # a left-padded prompt
    for model in (whole, sharded):
        logprobs, _ = response_logprobs(model, ids, mask, 7, 0.7)
        (-logprobs.mean()).backward()
    grad_diff = 0.0
    for (_name, p), q in zip(whole.named_parameters(), sharded.parameters(), strict=True):
        full = q.grad.full_tensor() if hasattr(q.grad, "full_tensor") else q.grad
        grad_diff = max(grad_diff, float((full - p.grad).abs().max()))
    rollout_cfg = RolloutConfig(max_new_tokens=6)
    seeds = row_seeds((0, 1), range(4))
    with torch.no_grad():
        a = generate(
            whole, ids[:, :7], mask[:, :7], rollout_cfg, seeds, eos_token_id=0, pad_token_id=1
        )
        with gathered(sharded) as inner:
            b = generate(
                inner, ids[:, :7], mask[:, :7], rollout_cfg, seeds, eos_token_id=0, pad_token_id=1
            )
    same_tokens = torch.equal(a.response_ids, b.response_ids)
    lp_diff = float((a.logprobs - b.logprobs).abs().max())
    sharded_type = type(next(iter(sharded.parameters()))).__name__
    # what a rollout engine receives: every process gathers the full tensors (full_tensor)
    pushed = dict(policy_weights(sharded))
    reference = whole.state_dict()
    same_names = set(pushed) == set(reference)
    push_diff = max(float((pushed[k] - reference[k]).abs().max()) for k in reference)
    if dist.get_rank() == 0:
        print(json.dumps({
            "grad_max_abs_diff": grad_diff, "same_tokens": same_tokens,
            "sampling_logprob_max_abs_diff": lp_diff, "param_type": sharded_type,
            "pushed_names_equal": same_names, "pushed_max_abs_diff": push_diff,
        }), flush=True)  # fmt: skip
    dist.barrier()  # both ranks done with every collective before either tears gloo down
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
