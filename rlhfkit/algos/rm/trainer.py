"""Reward-model training: Bradley–Terry on comparisons, K-way rankings, the MOSS-RLHF LM term.

Implementation details and their sources:

1. One forward pass per reply: a micro-batch of B pairs is one (2B, T) batch, chosen rows then
   rejected rows (`data.collate_pairs`); a ranked list of K replies is K rows, and the ranking
   loss takes all K(K−1)/2 pairs from those K scores (InstructGPT §3.5: "much faster, because it
   only requires a single forward pass of the RM for each completion (rather than K choose 2
   forward passes)").
2. Scores are read at the last real token of each row from the attention mask (`ScalarModel`),
   in float32.
3. Loss: −log σ(r_c − r_r − m) with m = margin_scale·margin when `use_margin` (Llama 2 §3.2.2),
   averaged over every comparison of the optimiser step; K-way: mean over all pairs i < j of
   −log σ(r_i − r_j) (`core.ranking_loss`).
4. LM imitation term (MOSS-RLHF, Zheng et al. 2023 §4.1): + β_rm · token-mean NLL of the chosen
   (best) reply given the prompt, from an LM head on the same body (`ScalarModel.lm_logits`).
5. Gradient accumulation equals one big batch: every micro-batch loss is divided by the step's
   global count of comparisons (and of chosen-reply tokens for the LM term), known beforehand
   from the data plan, times the W processes whose gradients DDP averages (`core.aggregate_loss`
   docstring).
6. Token-budget batching (`data.TokenBudgetSampler`): length-bucketed micro-batches whose padded
   cost, all rows counted, stays within `data.max_tokens`; `data.max_pairs` also caps the
   comparisons per batch (a fixed batch size when the budget is large).
7. After training, scores are shifted (and optionally scaled) so the training replies score mean
   0 (Stiennon et al. 2020 §3.4 normalise their RM so reference summaries score 0); the offset is
   stored in the saved folder and applied on load.
8. Evaluation on held-out pairs: accuracy, mean margin, calibration (reliability table and ECE),
   and on the simulated world agreement with the gold preference (`evaluate.pair_metrics`).
9. `disable_dropout` trains with the model in eval mode (no dropout; TRL `RewardTrainer` does
   this by default, `disable_dropout=True`). Default off: the model's own dropout applies.
10. Resume: the data plan depends only on (seed, epoch); checkpoints hold model, optimiser,
   scheduler and RNG states, so a killed and resumed run ends equal to an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algos.rm.config import RMConfig
from rlhfkit.algos.rm.evaluate import gold_gaps_of, groups_of, pair_metrics, score_pairs
from rlhfkit.core import aggregate_loss, pairwise_loss, ranking_loss
from rlhfkit.data import (
    DataError,
    TokenBudgetSampler,
    collate_pairs,
    collate_ranked,
    collate_shared_prompt,
    encode_pairs,
    encode_ranked,
    epoch_batches,
    expand_pairs,
    plan_steps,
    read_records,
    shared_length,
    split_records,
)
from rlhfkit.data.readers import Task
from rlhfkit.engine import (
    Engine,
    OfflineLoop,
    accumulate,
    eval_mode,
    resumed_step,
    unwrap,
)
from rlhfkit.models import ScalarModel, build_scalar_model, check_fits, load_tokenizer
from rlhfkit.types import PreferencePair, RankedList

# the summed stats of a step: preference loss, LM loss, correct comparisons, Σ score gaps
STAT_KEYS = ("pref", "lm", "correct", "gap")


@dataclass
class RMResult:
    model_dir: Path  # RUN/model: the reward model (HF folder, score normalisation stored)
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # final eval/* and last train metrics


@dataclass(frozen=True)
class Variant:
    """Pairs or ranked lists: how to read, encode and collate them, and how many rows and
    comparisons one item brings. Chosen once at setup."""

    task: Task  # what to read: "preferences" or "ranked"
    encode: Callable[..., list]
    collate: Callable[..., dict]
    rows: Callable[[Any], int]  # forward rows of one item
    comparisons: Callable[[Any], int]  # pairs the loss averages over, per item


VARIANTS = {
    "pairs": Variant("preferences", encode_pairs, collate_pairs, lambda it: 2, lambda it: 1),
    "ranked": Variant(
        "ranked",
        encode_ranked,
        collate_ranked,
        lambda it: len(it.sequences),
        lambda it: len(it.sequences) * (len(it.sequences) - 1) // 2,
    ),
}


def chosen_target_tokens(item: Any) -> int:
    """Tokens the LM term scores: positions t ≥ max(prompt_length, 1) of the chosen/best reply."""
    ids = item.chosen_ids if hasattr(item, "chosen_ids") else item.sequences[0]
    return max(0, len(ids) - max(item.prompt_length, 1))


def _read(cfg: RMConfig, variant: Variant) -> tuple[list, list[PreferencePair]]:
    """Training records (pairs or ranked lists) and validation pairs."""
    d = cfg.data
    if not d.train:
        raise DataError([], header="data.train is empty: give a comparisons file")
    train = read_records(d.train, variant.task, d).records
    if d.validation:
        val = read_records(d.validation, "preferences", d).records
    elif d.validation_fraction > 0:
        frac = d.validation_fraction
        train, val = split_records(train, (1.0 - frac, frac), seed=cfg.engine.seed)
    else:
        val = []
    val = [p for rec in val for p in (expand_pairs(rec) if isinstance(rec, RankedList) else [rec])]
    if cfg.use_margin and not d.ranked:
        missing = [p.source for p in train if p.margin is None]
        if missing:
            raise DataError(
                [],
                header=f"use_margin=true but {len(missing)} training pair(s) have no margin "
                f"(first: {missing[0]})",
            )
    return train, val


def _lm_loss(
    rm: ScalarModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, n_tokens: float
) -> torch.Tensor:
    """Σ NLL of the masked next tokens / n_tokens, from the LM head on the RM's body (its
    log-probs chunked over tokens: no (tokens × vocabulary) logits, `ScalarModel.lm_logprobs`)."""
    nll = -rm.lm_logprobs(hidden[:, :-1], ids[:, 1:])
    return aggregate_loss(nll, mask[:, 1:], "token_mean", num_tokens=n_tokens)


def micro_batch_loss(
    acc: Any,
    model: torch.nn.Module,
    batch: dict[str, Any],
    n_cmp: float,
    n_lm: float,
    world: int,
    cfg: RMConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's preference loss (+ β_rm · LM loss), divided by the *global* counts.

    `batch` is a `collate_pairs` or `collate_ranked` output; `n_cmp` and `n_lm` count the
    comparisons and chosen-reply target tokens of the whole step over all processes, so the
    summed gradient is that of the step's mean loss whatever the split into micro-batches.
    Stats: the batch's share of the preference and LM losses, correct comparisons, Σ score gaps.
    """
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    packed = "allowed" in batch  # shared-prompt rows (see data/shared_prompt.py)
    if packed:
        out = model(
            ids,
            batch["allowed"].to(device),
            position_ids=batch["position_ids"].to(device),
            score_index=batch["score_index"],
            return_hidden=cfg.beta_rm > 0,
        )
    else:
        out = model(ids, mask, return_hidden=cfg.beta_rm > 0)
    # a. preference loss: the batch mean × its comparisons / (global count / W)
    if "group_size" in batch:
        group = batch["group_size"]
        scores = out.scores.view(-1, group)
        pref = ranking_loss(scores)
        count = scores.shape[0] * group * (group - 1) // 2
        best_rows = torch.arange(0, out.scores.numel(), group, device=device)
        if packed:  # one row per list; response_mask marks the best reply's tokens
            best_rows = torch.arange(ids.shape[0], device=device)
    else:
        n = batch["num_pairs"]
        margin = cfg.margin_scale * batch["margin"].to(device) if cfg.use_margin else 0.0
        pref = pairwise_loss(out.scores[:n], out.scores[n:], margin)
        count = n
        best_rows = torch.arange(n, device=device)
    pref_loss = pref.loss * count / (n_cmp / world)
    loss = pref_loss
    # b. LM imitation term on the chosen (best) replies
    lm_loss = torch.zeros((), device=device)
    if cfg.beta_rm > 0:
        resp = batch["response_mask"].to(device)
        lm_loss = _lm_loss(
            acc.unwrap_model(model),
            out.hidden[best_rows],
            ids[best_rows],
            resp[best_rows],
            n_lm / world,
        )
        loss = loss + cfg.beta_rm * lm_loss
    stats = {
        "pref": pref_loss.detach(),
        "lm": lm_loss.detach(),
        "correct": pref.accuracy * count,
        "gap": pref.score_gap * count,
    }
    return loss, stats


def accumulate_gradients(
    acc: Any,
    model: torch.nn.Module,
    batches: Sequence[dict[str, Any]],
    n_cmp: float,
    n_lm: float,
    world: int,
    cfg: RMConfig,
) -> torch.Tensor:
    """Backward over this process's micro-batches of one optimiser step (`engine.accumulate`);
    returns the summed (preference loss, LM loss, correct comparisons, Σ score gaps), averaged
    over processes."""
    losses = [
        functools.partial(micro_batch_loss, acc, model, b, n_cmp, n_lm, world, cfg) for b in batches
    ]
    return _stat_tensor(accumulate(acc, model, losses), next(model.parameters()).device)


def _stat_tensor(sums: dict[str, float], device: torch.device) -> torch.Tensor:
    """The summed stats as one tensor in `STAT_KEYS` order (the logged metrics read it)."""
    return torch.tensor([sums[k] for k in STAT_KEYS], device=device)


@torch.no_grad()
def evaluate(
    rm: torch.nn.Module,
    engine: Engine,
    items: Sequence,
    pairs: Sequence[PreferencePair],
    cfg: RMConfig,
    pad_id: int,
) -> dict[str, Any]:
    """Held-out metrics (see `evaluate.pair_metrics`), gathered over processes (each scores its
    share with the model inside the DDP wrapper: no gradients, no collective per forward)."""
    rm = unwrap(rm)
    acc = engine.accelerator
    with eval_mode(rm):
        idx, chosen, rejected = score_pairs(
            rm,
            items,
            pad_id,
            cfg.data.max_tokens,
            engine.device,
            acc.process_index,
            engine.num_processes,
        )
    if engine.num_processes > 1:
        from accelerate.utils import gather_object

        idx, chosen, rejected = (
            torch.cat(gather_object([t.cpu()])) for t in (idx, chosen, rejected)
        )
    order = torch.argsort(idx)
    chosen, rejected = chosen[order], rejected[order]
    gold = gold_gaps_of(pairs)
    return pair_metrics(chosen, rejected, gold, cfg.calibration_bins, groups_of(pairs))


@torch.no_grad()
def fit_normalization(
    rm: ScalarModel,
    items: Sequence,
    variant: Variant,
    cfg: RMConfig,
    pad_id: int,
    device: torch.device,
) -> tuple[float, float]:
    """(offset, scale) so that the first `normalize_samples` training replies score mean 0 (and
    unit variance under "standardize"); (0, 1) for "none"."""
    if cfg.normalize == "none":
        return 0.0, 1.0
    rm.set_normalization(0.0, 1.0)
    raw: list[torch.Tensor] = []
    n_rows = 0
    rows_budget = max(cfg.data.max_tokens // max(variant.rows(it) for it in items), 1)
    sampler = TokenBudgetSampler(  # ranked lists of different K never share a batch
        [it.length for it in items],
        rows_budget,
        False,
        group_keys=[variant.rows(it) for it in items] if cfg.data.ranked else None,
    )
    with eval_mode(rm):
        for b in sampler:
            if n_rows >= cfg.normalize_samples:
                break
            batch = variant.collate([items[i] for i in b], pad_id)
            scores = rm(batch["input_ids"].to(device), batch["attention_mask"].to(device)).scores
            raw.append(scores.double().cpu())
            n_rows += scores.numel()
    values = torch.cat(raw)[: cfg.normalize_samples]
    offset = float(values.mean())
    scale = 1.0
    if cfg.normalize == "standardize" and values.numel() > 1:
        scale = 1.0 / max(float(values.std()), 1e-6)
    return offset, scale


@dataclass
class RMRun:
    """What a reward-model run trains with (`setup`)."""

    cfg: RMConfig
    engine: Engine
    variant: Variant  # pairs or ranked lists, picked once
    tokenizer: Any
    items: list  # training pairs or ranked lists, tokenized
    val_items: list  # validation pairs, tokenized (may be empty)
    val_pairs: list[PreferencePair]  # the validation pairs as read (gold gaps, groups)
    collate: Callable[..., dict]  # items → a batch (shared-prompt rows or plain rows)
    plan: list[list[list[int]]]  # per optimiser step, its micro-batches of item indices
    model: torch.nn.Module  # prepared (inside the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start: int  # the last step of the checkpoint resumed from (0: a fresh run)


def setup(cfg: RMConfig) -> RMRun:
    """Read the data (every bad row, an empty source, a missing model or tokenizer reported
    before the run directory is made), split, tokenize, plan; start the engine, build the
    model (a new scalar head on the SFT model's body), resume if possible."""
    variant = VARIANTS["ranked" if cfg.data.ranked else "pairs"]
    train_recs, val_pairs = _read(cfg, variant)
    tokenizer = load_tokenizer(
        cfg.tokenizer or cfg.model.name_or_path,
        "tokenizer" if cfg.tokenizer else "model.name_or_path",
    )
    check_fits(cfg.model, cfg.data.max_length)
    d = cfg.data
    items = variant.encode(
        tokenizer, train_recs, d.max_length, d.max_prompt_length, d.prompt_template
    )
    val_items = encode_pairs(
        tokenizer, val_pairs, d.max_length, d.max_prompt_length, d.prompt_template
    )
    if d.share_prompt:  # one packed row per comparison
        collate, lengths, budget = (
            collate_shared_prompt,
            [shared_length(it) for it in items],
            d.max_tokens,
        )
    else:  # the sampler counts items, each `max_rows` rows at most
        max_rows = max(variant.rows(it) for it in items)
        collate, lengths = variant.collate, [it.length for it in items]
        budget = d.max_tokens // max_rows
    sampler = TokenBudgetSampler(
        lengths,
        budget,
        shuffle=True,
        seed=cfg.engine.seed,
        group_keys=[variant.rows(it) for it in items] if d.ranked else None,
    )

    def batches_of_epoch(e: int) -> list[list[int]]:
        return epoch_batches(sampler, e, d.max_pairs, cfg.engine.seed)

    plan = plan_steps(batches_of_epoch, cfg.grad_accum_steps, 1, cfg.epochs, cfg.max_steps)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    if engine.num_processes > 1:
        plan = plan_steps(
            batches_of_epoch, cfg.grad_accum_steps, engine.num_processes, cfg.epochs, cfg.max_steps
        )
    engine.print(
        f"rm: {len(items)} training {'lists' if d.ranked else 'pairs'}, {len(val_items)} "
        f"validation pairs, {len(plan)} optimiser steps"
    )

    # the model (from the SFT model: a new scalar head on its body), optimiser, schedule
    rm = build_scalar_model(cfg.model)
    if cfg.beta_rm > 0:
        rm.attach_lm_head(cfg.model.name_or_path)
    engine.compile(rm)
    model, optimizer, scheduler = engine.prepare_trainable(rm, cfg.optim, len(plan))
    model.train(not cfg.disable_dropout)  # eval mode = no dropout; gradients flow either way
    return RMRun(
        cfg=cfg,
        engine=engine,
        variant=variant,
        tokenizer=tokenizer,
        items=items,
        val_items=val_items,
        val_pairs=val_pairs,
        collate=collate,
        plan=plan,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        start=resumed_step(engine),
    )


def train(cfg: RMConfig) -> RMResult:
    """Train a reward model on comparisons; returns the saved folder and final metrics."""
    run = setup(cfg)
    engine, acc, model, items = run.engine, run.engine.accelerator, run.model, run.items
    world, rank, pad_id = engine.num_processes, acc.process_index, run.tokenizer.pad_token_id
    evaluate_now = None
    if run.val_items:
        evaluate_now = functools.partial(
            evaluate, model, engine, run.val_items, run.val_pairs, cfg, pad_id
        )
    loop = OfflineLoop(
        engine,
        model,
        run.optimizer,
        run.scheduler,
        cfg=cfg,
        name="rm",
        last=len(run.plan),
        stat_keys=STAT_KEYS,
        evaluate=evaluate_now,
        start=run.start,
    )
    metrics: dict[str, Any] = {}
    for step in loop.steps():
        # 1. batches: this process's micro-batches of the planned step, over the step's global
        # counts of comparisons and of chosen-reply tokens
        groups = run.plan[step - 1]
        n_cmp = sum(run.variant.comparisons(items[i]) for b in groups for i in b)
        n_lm = sum(chosen_target_tokens(items[i]) for b in groups for i in b)
        batches = [run.collate([items[i] for i in b], pad_id) for b in groups[rank::world]]

        # 2. one optimiser step (a NaN/inf loss or gradient skips it: nothing moves)
        out = loop.step(
            step,
            [
                functools.partial(micro_batch_loss, acc, model, b, n_cmp, n_lm, world, cfg)
                for b in batches
            ],
        )
        sums = _stat_tensor(out.sums, next(model.parameters()).device)
        loop.rate.add(sum(int(b["attention_mask"].sum()) for b in batches))

        # 3. log, evaluate, checkpoint
        if loop.logs(step):
            # `accumulate` averaged the sums over processes: losses are the step's, counts / W
            metrics = {
                "loss/rm": float(sums[0]),
                "rm/accuracy": float(sums[2]) * world / n_cmp,
                "rm/margin": float(sums[3]) * world / n_cmp,
                "optim/lr": run.scheduler.get_last_lr()[0],
                **loop.rate.take(world),  # perf/tokens (non-padding), tokens/s since last log
            }
            if cfg.beta_rm > 0:
                metrics["loss/lm"] = float(sums[1])
            metrics["optim/grad_norm"] = out.grad_norm
            metrics["nan/skipped_steps"] = loop.skipped
            engine.log(metrics, step)
        loop.end_step(step)

    # 4. normalise scores on the reference set, evaluate (logged with the normalisation), save
    reward_model: ScalarModel = acc.unwrap_model(model)
    offset, scale = fit_normalization(reward_model, items, run.variant, cfg, pad_id, engine.device)
    reward_model.set_normalization(offset, scale)
    normalization = {"rm/score_offset": offset, "rm/score_scale": scale}
    metrics.update(normalization)
    if evaluate_now is not None:
        loop.evaluate = lambda: evaluate_now() | normalization
    model_dir = loop.finish(metrics, lambda path: reward_model.save(path, run.tokenizer))
    return RMResult(model_dir, engine.run.path, metrics)
