"""Supervised fine-tuning: next-token loss on the response tokens of demonstrations.

Implementation details and their sources:

1. Loss on response tokens only: `logits[:, :-1]` predict `input_ids[:, 1:]`, masked by
   `response_mask[:, 1:]` (prompt tokens are context, not targets; InstructGPT SFT, TRL
   `SFTTrainer(completion_only_loss=True)`). The log-probs come from the hidden states in
   float32, chunked over tokens (`rollout.next_token_logprobs` → `core.head_logprobs`), so the
   (B, T, V) logits are never held, forward or backward.
2. Gradient accumulation equals one big batch: before each optimiser step the number of target
   tokens N of *all* its micro-batches (on all processes) is known from the data plan, and each
   micro-batch's loss is `aggregate_loss(…, num_tokens=N / W)` (W processes, whose gradients DDP
   averages). The plain mean per micro-batch would weight short batches too much (the
   gradient-accumulation bug fixed in transformers 4.46, and Dr. GRPO §3).
3. Token-budget batching (`data.TokenBudgetSampler`, fairseq's `max_tokens`): rows × longest row
   ≤ `data.max_tokens` per micro-batch, length-bucketed, so little compute goes to padding.
4. Packing (optional): `data.pack_sft` puts several demonstrations in a row with positions
   restarting per demonstration; here the attention mask is made block-diagonal causal (a 4-D
   additive mask, which transformers passes to SDPA and eager attention unchanged), so packed
   training computes exactly the unpacked loss (tested).
5. The data plan is a pure function of (seed, epoch): the micro-batches of step s are the same in
   every run, so resuming needs only the step number; the engine restores weights, optimiser,
   scheduler and RNG states (dropout), and a resumed run ends equal to an uninterrupted one.
6. Evaluation: token-mean NLL of the validation split's response tokens and its exponential, the
   perplexity (the sums are reduced over processes before dividing).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit.algos.sft.config import SFTConfig
from rlhfkit.core import aggregate_loss, masked_sum
from rlhfkit.data import (
    DataError,
    EncodedSFT,
    TokenBudgetSampler,
    collate_sft,
    encode_sft,
    pack_sft,
    plan_steps,
    read_records,
    split_records,
)
from rlhfkit.engine import (
    Engine,
    OfflineLoop,
    eval_mode,
    resumed_step,
    unwrap,
)
from rlhfkit.models import check_fits, load_policy, load_tokenizer, save_policy
from rlhfkit.rollout import next_token_logprobs


@dataclass
class SFTResult:
    model_dir: Path  # RUN/model: the fine-tuned causal LM and its tokenizer (HF folder)
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)  # final eval/* and last train metrics


def target_tokens(item: EncodedSFT) -> int:
    """Tokens the loss scores in `item`: positions t ≥ 1 of the response (see `collate_sft`)."""
    return max(0, item.length - max(item.prompt_length, 1))


def packed_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) segment ids (0 = padding) → (B, 1, T, T) additive mask: 0 where token i may attend
    to token j (same segment, j ≤ i), the dtype's minimum elsewhere."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = same & causal & (segment_ids[:, :, None] > 0)
    # padding rows attend to themselves only, so softmax never sees an all-masked row (NaN)
    allowed |= torch.eye(t, dtype=torch.bool, device=segment_ids.device)
    zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def _read(cfg: SFTConfig) -> tuple[list, list]:
    d = cfg.data
    if not d.train:
        raise DataError([], header="data.train is empty: give a demonstrations file")
    train = read_records(d.train, "sft", d).records
    if d.validation:
        return train, read_records(d.validation, "sft", d).records
    if d.validation_fraction == 0:
        return train, []
    frac = d.validation_fraction
    train, val = split_records(train, (1.0 - frac, frac), seed=cfg.engine.seed)
    return train, val


def _batch(items: Sequence[EncodedSFT], cfg: SFTConfig, pad_id: int, dtype: torch.dtype) -> dict:
    if not cfg.data.packing:
        return collate_sft(items, pad_id)
    batch = pack_sft(items, cfg.data.max_length, pad_id)
    batch["packed_mask"] = packed_attention_mask(batch.pop("segment_ids"), dtype)
    return batch


def _logprobs(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """(B, T − 1) float32 log-probs of `input_ids[:, 1:]`, without the (B, T, V) logits."""
    ids = batch["input_ids"].to(device)
    if "packed_mask" in batch:
        mask = batch["packed_mask"].to(device)
        return next_token_logprobs(model, ids, mask, batch["position_ids"].to(device))
    return next_token_logprobs(model, ids, batch["attention_mask"].to(device).long())


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    n_tokens: float,
    n_seqs: float,
    world: int,
    cfg: SFTConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's response-token NLL, divided by the *global* counts of the step.

    `n_tokens` / `n_seqs` count the target tokens / sequences of the whole step over all
    processes, so the summed gradient is that of one big batch whatever the split.
    """
    device = next(model.parameters()).device
    nll = -_logprobs(model, batch, device)
    mask = batch["response_mask"].to(device)[:, 1:]
    loss = aggregate_loss(
        nll, mask, cfg.loss_mode, num_tokens=n_tokens / world, num_seqs=n_seqs / world
    )
    return loss, {"loss": loss.detach()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    engine: Engine,
    items: Sequence[EncodedSFT],
    cfg: SFTConfig,
    pad_id: int,
    dtype: torch.dtype,
) -> dict[str, float]:
    """Token-mean NLL and perplexity of the response tokens of `items` (process r scores every
    W-th batch: no gradients, so the model inside the DDP wrapper, which needs no equal number of
    forwards per process)."""
    model = unwrap(model)
    acc = engine.accelerator
    order = sorted(range(len(items)), key=lambda i: items[i].length)
    sampler = TokenBudgetSampler([items[i].length for i in order], cfg.data.max_tokens, False)
    nll_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
    count = torch.zeros((), dtype=torch.float64, device=engine.device)
    with eval_mode(model):
        for k, b in enumerate(sampler):
            if k % engine.num_processes != acc.process_index:
                continue
            batch = _batch([items[order[i]] for i in b], cfg, pad_id, dtype)
            nll = -_logprobs(model, batch, engine.device)
            mask = batch["response_mask"].to(engine.device)[:, 1:].bool()
            nll_sum += masked_sum(nll.double(), mask)
            count += mask.sum()
    nll_sum, count = acc.reduce(nll_sum, "sum"), acc.reduce(count, "sum")
    nll = float(nll_sum / count.clamp(min=1))
    return {
        "eval/loss": nll,
        "eval/perplexity": math.exp(min(nll, 50.0)),
        "eval/tokens": float(count),
    }


def train(cfg: SFTConfig) -> SFTResult:
    """Fine-tune `cfg.model` on demonstrations; returns the saved model folder and metrics."""
    # 1. data: read (every bad row, an empty source, a missing model or tokenizer reported
    # before the run directory is made), split, tokenize, plan
    train_recs, val_recs = _read(cfg)
    tokenizer = load_tokenizer(
        cfg.tokenizer or cfg.model.name_or_path,
        "tokenizer" if cfg.tokenizer else "model.name_or_path",
    )
    check_fits(cfg.model, cfg.data.max_length)
    pad_id = tokenizer.pad_token_id
    d = cfg.data
    train_items = encode_sft(
        tokenizer, train_recs, d.max_length, d.max_prompt_length, d.prompt_template
    )
    val_items = encode_sft(
        tokenizer, val_recs, d.max_length, d.max_prompt_length, d.prompt_template
    )
    sampler = TokenBudgetSampler(
        [it.length for it in train_items], cfg.data.max_tokens, shuffle=True, seed=cfg.engine.seed
    )

    def batches_of_epoch(e: int) -> list[list[int]]:
        sampler.set_epoch(e)
        return [list(b) for b in sampler.batches()]

    plan = plan_steps(batches_of_epoch, cfg.grad_accum_steps, 1, cfg.epochs, cfg.max_steps)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    acc = engine.accelerator
    if engine.num_processes > 1:
        plan = plan_steps(
            batches_of_epoch, cfg.grad_accum_steps, engine.num_processes, cfg.epochs, cfg.max_steps
        )
    engine.print(
        f"sft: {len(train_items)} train / {len(val_items)} validation demonstrations, "
        f"{len(plan)} optimiser steps"
    )

    # 2. model, optimiser, schedule (the scheduler is registered, not prepared: prepared
    # schedulers step once per process)
    policy = load_policy(cfg.model, tokenizer)
    if len(tokenizer) > policy.get_input_embeddings().num_embeddings:
        policy.resize_token_embeddings(len(tokenizer))
    dtype = next(policy.parameters()).dtype
    engine.compile(policy)
    policy, optimizer, scheduler = engine.prepare_trainable(policy, cfg.optim, len(plan))
    policy.train()

    # 3. resume
    start = resumed_step(engine)

    # 4. loop: one optimiser step per planned group of micro-batches
    world, rank = engine.num_processes, acc.process_index
    loop = OfflineLoop(
        engine,
        policy,
        optimizer,
        scheduler,
        cfg=cfg,
        name="sft",
        last=len(plan),
        stat_keys=("loss",),
        evaluate=functools.partial(evaluate, policy, engine, val_items, cfg, pad_id, dtype)
        if val_items
        else None,
        start=start,
    )
    metrics: dict[str, float] = {}
    for step in loop.steps():
        groups = plan[step - 1]
        n_tokens = sum(target_tokens(train_items[i]) for b in groups for i in b)
        n_seqs = sum(len(b) for b in groups)
        batches = [
            _batch([train_items[i] for i in b], cfg, pad_id, dtype) for b in groups[rank::world]
        ]
        losses = [
            functools.partial(micro_batch_loss, policy, b, n_tokens, n_seqs, world, cfg)
            for b in batches
        ]
        # a NaN/inf loss or gradient skips the step: weights and optimiser unchanged
        out = loop.step(step, losses)
        loop.rate.add(sum(int(b["attention_mask"].sum()) for b in batches))

        # 5. log, evaluate, checkpoint
        if loop.logs(step):
            metrics = {
                "loss/sft": out.sums["loss"],  # the step's loss (`accumulate` reduced it)
                "optim/lr": scheduler.get_last_lr()[0],
                **loop.rate.take(world),  # perf/tokens (non-padding), tokens/s since last log
                "optim/grad_norm": out.grad_norm,
                "nan/skipped_steps": loop.skipped,
            }
            engine.log(metrics, step)
        loop.end_step(step)

    # 6. final evaluation and the model folder
    unwrapped = acc.unwrap_model(policy)
    model_dir = loop.finish(metrics, lambda path: save_policy(unwrapped, tokenizer, path))
    return SFTResult(model_dir, engine.run.path, metrics)
