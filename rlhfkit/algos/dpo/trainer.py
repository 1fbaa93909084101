"""Offline preference optimisation: DPO, conservative DPO, IPO and SimPO on comparisons.

Implementation details and their sources:

1. Losses (`rlhfkit.core`), picked once at setup from `LOSSES`:
   - sigmoid: DPO, −log σ(β·h), h = Δ log-ratio of chosen over rejected to the reference
     (Rafailov et al. 2023 eq. 7); with `label_smoothing` s > 0 conservative DPO,
     −(1 − s)·log σ(β·h) − s·log σ(−β·h) (Mitchell 2023; TRL `label_smoothing`);
   - ipo: (h − 1/(2β))² (Azar et al. 2023 eq. 17) on token-*mean* log-probs, as TRL does;
   - simpo: −log σ(β·(ā_w − ā_l) − γ) on token-mean log-probs, no reference model (Meng et al.
     2024 eq. 6; TRL `CPOTrainer(loss_type="simpo")`).
2. Response-only log-probs: the sum over the reply's tokens (EOS included) of log π(token | prompt,
   earlier reply tokens); prompt tokens are context. The LM head runs at response positions only
   and the last GPT-2 block at the predicting columns only (`logps.pair_logps`).
3. Shared-prompt rows (`data.collate_shared_prompt`, as the reward model): one row per pair,
   the prompt once, a block mask so each reply sees the prompt and itself only; exact (tested
   against plain rows).
4. The reference: "cached" computes the reference log-probs of every training and validation
   pair once, before the first step, in eval mode, and writes them atomically to
   RUN/reference_logps.pt with a fingerprint of the tokenized data; a resumed run reads them
   back (the policy has moved by then, so they could not be recomputed from it). TRL's
   `precompute_ref_log_probs`. "live" runs the reference beside the policy, and with LoRA and no
   `ref_model` it is the policy with its adapters disabled (peft `disable_adapter`; TRL and
   OpenRLHF do the same), so no second copy is held.
5. Gradient accumulation equals one big batch: each micro-batch's summed per-pair loss is
   divided by the step's global pair count (from the data plan) over W processes
   (`core.aggregate_loss` docstring), and the step goes through `engine.accumulate` /
   `engine.optimizer_step` (clipping; a NaN/inf loss or gradient skips the step).
6. Metrics with TRL's names and meanings: `rewards/chosen`, `rewards/rejected` (mean implicit
   reward β·(log π − log π_ref) of each side), `rewards/accuracies` (share of pairs with chosen
   reward > rejected), `rewards/margins` (mean difference), `logps/chosen`, `logps/rejected`
   (mean summed policy log-probs). The same on the validation split under `eval/`: the held-out
   preference accuracy of the implicit reward.
7. Dropout is off by default (TRL `disable_dropout=True`): the implicit reward is then a function
   of the weights, and the cached reference was computed in the same mode.
8. Resume: the data plan depends only on (seed, epoch); checkpoints hold model, optimiser,
   scheduler and RNG states, so a killed and resumed run ends equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algos.dpo.config import DPOConfig
from rlhfkit.algos.dpo.logps import collate, pair_logps
from rlhfkit.config import ConfigError
from rlhfkit.core import PreferenceLosses, dpo_sigmoid_losses, ipo_losses, simpo_losses
from rlhfkit.data import (
    DataError,
    EncodedPair,
    TokenBudgetSampler,
    encode_pairs,
    epoch_batches,
    plan_steps,
    read_preferences,
    shared_length,
    split_records,
)
from rlhfkit.engine import (
    Engine,
    NonFiniteError,
    TokenRate,
    accumulate,
    build_optimizer,
    build_scheduler,
    latest_checkpoint,
    optimizer_step,
    unwrap,
)
from rlhfkit.models import (
    ModelConfig,
    check_fits,
    check_source,
    load_policy,
    load_tokenizer,
    save_policy,
)
from rlhfkit.rollout import reference_context
from rlhfkit.types import PreferencePair

REFERENCE_FILE = "reference_logps.pt"


@dataclass
class DPOResult:
    model_dir: Path  # RUN/model: the trained policy and its tokenizer (HF folder)
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)  # final eval/* and last train metrics


@dataclass(frozen=True)
class Variant:
    """One loss: whether it needs a reference, whether it takes token-mean log-probs, and the
    per-pair loss of (policy chosen, policy rejected, ref chosen, ref rejected)."""

    needs_reference: bool
    token_mean: bool
    losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, DPOConfig], Any]


LOSSES = {
    "sigmoid": Variant(
        True, False, lambda pc, pr, rc, rr, cfg: dpo_sigmoid_losses(
            pc, pr, rc, rr, cfg.beta, cfg.label_smoothing
        ),
    ),
    "ipo": Variant(True, True, lambda pc, pr, rc, rr, cfg: ipo_losses(pc, pr, rc, rr, cfg.beta)),
    "simpo": Variant(
        False, True, lambda pc, pr, rc, rr, cfg: simpo_losses(pc, pr, cfg.beta, cfg.simpo_gamma)
    ),
}  # fmt: skip

STAT_KEYS = ("loss", "chosen", "rejected", "correct", "logps_chosen", "logps_rejected")


def _read(cfg: DPOConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training and validation pairs (`read_preferences` expands ranked lists to their pairs)."""
    d = cfg.data
    if not d.train:
        raise DataError([], header="data.train is empty: give a comparisons file")
    train = read_preferences(d.train, d.format, on_error=d.on_error).records
    if d.validation:
        return train, read_preferences(d.validation, d.format, on_error=d.on_error).records
    if d.validation_fraction == 0:
        return train, []
    frac = d.validation_fraction
    train, val = split_records(train, (1.0 - frac, frac), seed=cfg.engine.seed)
    return train, val


def fingerprint(items: Sequence[EncodedPair], reference: str) -> str:
    """A hash of the tokenized pairs and the reference's name: a cache from other data (or
    another reference) is never read back."""
    h = hashlib.sha256(reference.encode())
    for it in items:
        h.update(repr((it.chosen_ids, it.rejected_ids, it.prompt_length)).encode())
    return h.hexdigest()


def _inference_batches(items: Sequence[EncodedPair], cfg: DPOConfig) -> list[list[int]]:
    """Length-sorted batches within the token budget and `max_pairs` (64 when unset)."""
    lengths = [shared_length(it) if cfg.data.share_prompt else 2 * it.length for it in items]
    sampler = TokenBudgetSampler(lengths, cfg.data.max_tokens, shuffle=False)
    cap = cfg.data.max_pairs or 64
    return [b[i : i + cap] for b in sampler.batches() for i in range(0, len(b), cap)]


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module,
    items: Sequence[EncodedPair],
    pad_id: int,
    cfg: DPOConfig,
    context: Callable[[], Any] = contextlib.nullcontext,
    progress: Callable[[list[list[int]]], Iterable[list[int]]] = iter,
) -> torch.Tensor:
    """(2, N) float32 summed log-probs of every pair's chosen / rejected reply under `model`
    (in eval mode, inside `context()`: e.g. LoRA adapters disabled), in item order.
    `progress` wraps the list of batches (e.g. `engine.progress`, to show how far it is)."""
    if not items:
        return torch.zeros(2, 0)
    was_training = model.training
    model.eval()
    out = torch.zeros(2, len(items))
    with context():
        for b in progress(_inference_batches(items, cfg)):
            batch = collate([items[i] for i in b], pad_id, cfg.data.share_prompt)
            out[:, b] = pair_logps(model, batch).float().cpu()
    model.train(was_training)
    return out


def _cached_reference(
    engine: Engine,
    path: Path,
    key: str,
    compute: Callable[[], dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Read RUN/reference_logps.pt if its fingerprint is `key`, else compute and write it
    atomically (temporary name, then rename)."""
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == key:
            engine.print(f"dpo: reference log-probs read from {path}")
            return saved
        engine.print(f"[yellow]dpo: {path} was computed for other data; recomputing")
    if engine.cfg.resume and latest_checkpoint(engine.run.checkpoints) is not None:
        # the policy has moved: recomputing from it would give the wrong reference
        raise RuntimeError(
            f"dpo: resuming from {engine.run.checkpoints} needs the reference log-probs of its "
            f"data in {path}, which are missing or were computed for other data; start a new "
            "run directory (or engine.resume=false)"
        )
    values = compute()
    if engine.is_main:
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({**values, "fingerprint": key}, tmp)
        os.replace(tmp, path)
    return values


def micro_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    ref: Callable[[dict[str, Any]], torch.Tensor] | None,
    n_pairs: float,
    world: int,
    variant: Variant,
    cfg: DPOConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's summed per-pair loss divided by the step's *global* pair count.

    `ref(batch)` gives the (2, n) reference log-probs (cached or live; None for SimPO). Stats
    are sums over the batch's pairs (loss share, rewards, correct pairs, policy log-probs).
    """
    logps = pair_logps(model, batch)
    ref_logps = ref(batch).to(logps) if ref is not None else torch.zeros_like(logps)
    if variant.token_mean:
        counts = batch["counts"].to(logps).clamp(min=1)
        logps, ref_logps = logps / counts, ref_logps / counts
    out: PreferenceLosses = variant.losses(logps[0], logps[1], ref_logps[0], ref_logps[1], cfg)
    loss = out.losses.sum() / (n_pairs / world)
    summed = logps.detach() * (batch["counts"].to(logps) if variant.token_mean else 1.0)
    stats = {
        "loss": loss.detach(),
        "chosen": out.chosen_rewards.sum(),
        "rejected": out.rejected_rewards.sum(),
        "correct": (out.chosen_rewards > out.rejected_rewards).sum(),
        "logps_chosen": summed[0].sum(),
        "logps_rejected": summed[1].sum(),
    }
    return loss, stats


def _named(sums: dict[str, float], n: float, prefix: str = "") -> dict[str, float]:
    """TRL's metric names from summed stats over n pairs."""
    return {
        f"{prefix}rewards/chosen": sums["chosen"] / n,
        f"{prefix}rewards/rejected": sums["rejected"] / n,
        f"{prefix}rewards/accuracies": sums["correct"] / n,
        f"{prefix}rewards/margins": (sums["chosen"] - sums["rejected"]) / n,
        f"{prefix}logps/chosen": sums["logps_chosen"] / n,
        f"{prefix}logps/rejected": sums["logps_rejected"] / n,
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    items: Sequence[EncodedPair],
    ref: Callable[[dict[str, Any]], torch.Tensor] | None,
    variant: Variant,
    cfg: DPOConfig,
    pad_id: int,
) -> dict[str, float]:
    """Held-out loss and implicit-reward metrics (`eval/rewards/accuracies` is the preference
    accuracy of the implicit reward) over `items` (every process all of them, with the model
    inside the DDP wrapper)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(STAT_KEYS, 0.0)
    for b in _inference_batches(items, cfg):
        batch = collate([items[i] for i in b], pad_id, cfg.data.share_prompt)
        batch["index"] = torch.tensor(b)
        _, stats = micro_batch_loss(model, batch, ref, len(items), 1, variant, cfg)
        for k, v in stats.items():
            sums[k] += float(v)
    model.train(was_training)
    return {
        "eval/loss": sums["loss"],
        **_named(sums, len(items), "eval/"),
        "eval/pairs": len(items),
    }


def train(cfg: DPOConfig) -> DPOResult:
    """Train a policy on comparisons with DPO / cDPO / IPO / SimPO; returns the saved folder."""
    variant = LOSSES[cfg.loss_type]

    # 1. data: read (every bad row, a missing model or tokenizer, a model shorter than
    # max_length reported before the run directory is made), split, tokenize, plan
    if cfg.model.name_or_path.startswith("tiny:") and not cfg.tokenizer:
        raise ConfigError(
            "a tiny:… model needs `tokenizer` (e.g. the simulated world's tokenizer/)"
        )
    tokenizer = load_tokenizer(
        cfg.tokenizer or cfg.model.name_or_path,
        "tokenizer" if cfg.tokenizer else "model.name_or_path",
    )
    check_fits(cfg.model, cfg.data.max_length)
    if cfg.ref_model:
        check_source(cfg.ref_model, "ref_model")
    pad_id = tokenizer.pad_token_id
    d = cfg.data
    train_pairs, val_pairs = _read(cfg)
    encode = functools.partial(
        encode_pairs,
        tokenizer,
        max_length=d.max_length,
        max_prompt_length=d.max_prompt_length,
        template=d.prompt_template,
    )
    items, val_items = encode(train_pairs), encode(val_pairs)
    engine = Engine(cfg.engine, cfg.out_dir, cfg)
    acc = engine.accelerator
    lengths = [shared_length(it) if d.share_prompt else 2 * it.length for it in items]
    sampler = TokenBudgetSampler(lengths, d.max_tokens, shuffle=True, seed=cfg.engine.seed)
    plan = plan_steps(
        lambda e: epoch_batches(sampler, e, d.max_pairs, cfg.engine.seed),
        cfg.grad_accum_steps,
        engine.num_processes,
        cfg.epochs,
        cfg.max_steps,
    )
    engine.print(
        f"dpo ({cfg.loss_type}): {len(items)} training pairs, {len(val_items)} validation "
        f"pairs, {len(plan)} optimiser steps"
    )

    # 2. policy, optimiser, schedule (dropout off unless asked for: see detail 7)
    policy = load_policy(cfg.model, tokenizer)
    engine.compile(policy)
    optimizer = build_optimizer(policy.parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(plan))
    policy, optimizer = acc.prepare(policy, optimizer)
    acc.register_for_checkpointing(scheduler)
    policy.train(not cfg.disable_dropout)
    unwrapped = acc.unwrap_model(policy)

    # 3. the reference: cached log-probs (computed before any step, or read back) or live
    ref: Callable[[dict[str, Any]], torch.Tensor] | None = None
    val_ref = None
    if variant.needs_reference:
        ref_model, context = _reference_model(cfg, unwrapped, tokenizer, engine.device)
        engine.compile(ref_model)  # the policy itself again is a no-op
        if cfg.reference == "cached":
            key = fingerprint([*items, *val_items], cfg.ref_model or cfg.model.name_or_path)
            cache = _cached_reference(
                engine,
                engine.run.path / REFERENCE_FILE,
                key,
                lambda: {
                    split: reference_logps(
                        ref_model,
                        split_items,
                        pad_id,
                        cfg,
                        context,
                        functools.partial(engine.progress, desc=f"dpo reference, {split} pairs"),
                    )
                    for split, split_items in (("train", items), ("validation", val_items))
                },
            )
            del ref_model
            ref = lambda batch: cache["train"][:, batch["index"]]  # noqa: E731
            val_ref = lambda batch: cache["validation"][:, batch["index"]]  # noqa: E731
        else:
            ref = val_ref = functools.partial(_live_reference, ref_model, context)

    # 4. resume
    state = engine.resume()
    start = state["step"] if state else 0

    # 5. loop: one optimiser step per planned group of micro-batches
    world, rank = engine.num_processes, acc.process_index
    skipped = 0  # optimiser steps skipped for a NaN/inf loss or gradient
    metrics: dict[str, Any] = {}
    rate = TokenRate()  # training tokens/s, evaluation and checkpoints excluded
    for step in engine.progress(
        range(start + 1, len(plan) + 1), total=len(plan) - start, desc="dpo"
    ):
        groups = plan[step - 1]
        n_pairs = sum(len(b) for b in groups)
        batches = []
        for b in groups[rank::world]:
            batch = collate([items[i] for i in b], pad_id, d.share_prompt)
            batch["index"] = torch.tensor(b)
            batches.append(batch)
        losses = [
            functools.partial(micro_batch_loss, policy, b, ref, n_pairs, world, variant, cfg)
            for b in batches
        ]
        try:
            sums = accumulate(acc, policy, losses)
            grad_norm = optimizer_step(acc, policy, optimizer, scheduler, cfg.optim.max_grad_norm)
        except NonFiniteError as e:  # the step is skipped: weights and optimiser unchanged
            skipped += 1
            engine.print(f"[yellow]dpo step {step}: {e}; step skipped")
            sums, grad_norm = dict.fromkeys(STAT_KEYS, float("nan")), float("nan")
        rate.add(sum(int(b["attention_mask"].sum()) for b in batches))

        # 6. log, evaluate, checkpoint
        if step % cfg.log_every == 0 or step == len(plan):
            # `accumulate` averaged the sums over processes: the loss is the step's, the other
            # sums (over this step's pairs) are W times that average
            summed = {k: sums[k] * world for k in STAT_KEYS}
            metrics = {
                "loss/dpo": sums["loss"],
                **_named(summed, n_pairs),
                "optim/lr": scheduler.get_last_lr()[0],
                "optim/grad_norm": grad_norm,
                **rate.take(world),  # perf/tokens (non-padding) and tokens/s since the last log
                "nan/skipped_steps": skipped,
            }
            engine.log(metrics, step)
        if val_items and cfg.eval_every and step % cfg.eval_every == 0 and step != len(plan):
            with rate.paused():
                engine.log(evaluate(policy, val_items, val_ref, variant, cfg, pad_id), step)
        if engine.should_save(step) or step == len(plan):
            with rate.paused():
                engine.save(step, {"step": step})

    # 7. final evaluation and the model folder
    if val_items:
        final = evaluate(policy, val_items, val_ref, variant, cfg, pad_id)
        engine.log(final, len(plan))
        metrics.update(final)
    model_dir = engine.run.path / "model"
    acc.wait_for_everyone()
    if engine.is_main:
        save_policy(unwrapped, tokenizer, model_dir)
    acc.wait_for_everyone()
    engine.close()
    return DPOResult(model_dir, engine.run.path, metrics)


def _reference_model(
    cfg: DPOConfig, policy: torch.nn.Module, tokenizer: Any, device: torch.device
) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """(model, context) computing reference log-probs: a frozen `ref_model`; the policy with
    adapters disabled (LoRA); the policy itself before training (cached); or a frozen copy of
    the initial policy (live, no LoRA)."""
    if cfg.ref_model:
        ref_cfg = ModelConfig(name_or_path=cfg.ref_model, dtype=cfg.model.dtype)
        ref = load_policy(ref_cfg, tokenizer).to(device).eval().requires_grad_(False)
        return ref, contextlib.nullcontext
    if cfg.model.lora is not None:
        return policy, functools.partial(reference_context, policy, None)
    if cfg.reference == "cached":  # computed before the first step: the policy is π_ref
        return policy, contextlib.nullcontext
    ref = load_policy(cfg.model.model_copy(update={"lora": None}), tokenizer)
    ref.load_state_dict(policy.state_dict())  # tiny:… models are random: copy, do not rebuild
    return ref.to(device).eval().requires_grad_(False), contextlib.nullcontext


def _live_reference(
    model: torch.nn.Module, context: Callable[[], Any], batch: dict[str, Any]
) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad(), context():
        out = pair_logps(model, batch)
    model.train(was_training)
    return out
