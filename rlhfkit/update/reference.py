"""The reference policy of the offline preference trainers (DPO and its variants, KTO): which
model computes the reference log-probs, and the cache of them a run computes once.

1. `reference_model`: a frozen `ref_model` folder; the policy with its LoRA adapters disabled
   (peft `disable_adapter`; TRL and OpenRLHF do the same), so no second copy is held; the
   policy itself before training (cached); or a frozen copy of the initial policy (live).
2. `reference_logps` computes the (2, N) summed log-probs of every item's two replies in eval
   mode, in length-sorted batches; `cached_reference` writes them once, atomically, to
   RUN/reference_logps.pt with a fingerprint of the tokenized data, and a resumed run reads them
   back (the policy has moved by then, so they could not be recomputed from it). TRL's
   `precompute_ref_log_probs`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhfkit.config import ConfigError
from rlhfkit.data import EncodedPair, TokenBudgetSampler, shared_length
from rlhfkit.engine import Engine, eval_mode, latest_checkpoint
from rlhfkit.models import ModelConfig, check_fits, check_source, load_policy, load_tokenizer
from rlhfkit.rollout import reference_context
from rlhfkit.update.pairs import collate, pair_logps

__all__ = [
    "REFERENCE_FILE",
    "PairBatching",
    "Reference",
    "cached_reference",
    "fingerprint",
    "inference_batches",
    "live_reference",
    "load_preference_tokenizer",
    "pair_references",
    "reference_logps",
    "reference_model",
]

REFERENCE_FILE = "reference_logps.pt"


class PairBatching(Protocol):
    """How pairs are batched (the data config of DPO and KTO has these keys)."""

    share_prompt: bool
    max_tokens: int
    max_pairs: int | None


def fingerprint(items: Sequence[EncodedPair], reference: str) -> str:
    """A hash of the tokenized pairs and the reference's name: a cache from other data (or
    another reference) is never read back."""
    h = hashlib.sha256(reference.encode())
    for it in items:
        h.update(repr((it.chosen_ids, it.rejected_ids, it.prompt_length)).encode())
    return h.hexdigest()


def inference_batches(items: Sequence[EncodedPair], data: PairBatching) -> list[list[int]]:
    """Length-sorted batches within the token budget and `max_pairs` (64 when unset)."""
    lengths = [shared_length(it) if data.share_prompt else 2 * it.length for it in items]
    sampler = TokenBudgetSampler(lengths, data.max_tokens, shuffle=False)
    cap = data.max_pairs or 64
    return [b[i : i + cap] for b in sampler.batches() for i in range(0, len(b), cap)]


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module,
    items: Sequence[EncodedPair],
    pad_id: int,
    data: PairBatching,
    context: Callable[[], Any] = contextlib.nullcontext,
    progress: Callable[[list[list[int]]], Iterable[list[int]]] = iter,
) -> torch.Tensor:
    """(2, N) float32 summed log-probs of every pair's chosen / rejected reply under `model`
    (in eval mode, inside `context()`: e.g. LoRA adapters disabled), in item order.
    `progress` wraps the list of batches (e.g. `engine.progress`, to show how far it is)."""
    if not items:
        return torch.zeros(2, 0)
    out = torch.zeros(2, len(items))
    with eval_mode(model), context():
        for b in progress(inference_batches(items, data)):
            batch = collate([items[i] for i in b], pad_id, data.share_prompt)
            out[:, b] = pair_logps(model, batch).float().cpu()
    return out


def cached_reference(
    engine: Engine,
    path: Path,
    key: str,
    compute: Callable[[], dict[str, torch.Tensor]],
    name: str,
) -> dict[str, torch.Tensor]:
    """Read RUN/reference_logps.pt if its fingerprint is `key`, else compute and write it
    atomically (temporary name, then rename). `name` (the command) starts the messages."""
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == key:
            engine.print(f"{name}: reference log-probs read from {path}")
            return saved
        engine.print(f"[yellow]{name}: {path} was computed for other data; recomputing")
    if engine.cfg.resume and latest_checkpoint(engine.run.checkpoints) is not None:
        # the policy has moved: recomputing from it would give the wrong reference
        raise RuntimeError(
            f"{name}: resuming from {engine.run.checkpoints} needs the reference log-probs of "
            f"its data in {path}, which are missing or were computed for other data; start a "
            "new run directory (or engine.resume=false)"
        )
    values = compute()
    if engine.is_main:
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({**values, "fingerprint": key}, tmp)
        os.replace(tmp, path)
    return values


def reference_model(
    model: ModelConfig,
    ref_model: str | None,
    cached: bool,
    policy: torch.nn.Module,
    tokenizer: Any,
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[], Any]]:
    """(model, context) computing reference log-probs: a frozen `ref_model`; the policy with
    adapters disabled (LoRA); the policy itself before training (`cached`); or a frozen copy of
    the initial policy (live, no LoRA)."""
    if ref_model:
        ref_cfg = ModelConfig(name_or_path=ref_model, dtype=model.dtype)
        ref = load_policy(ref_cfg, tokenizer).to(device).eval().requires_grad_(False)
        return ref, contextlib.nullcontext
    if model.lora is not None:
        return policy, functools.partial(reference_context, policy, None)
    if cached:  # computed before the first step: the policy is π_ref
        return policy, contextlib.nullcontext
    ref = load_policy(model.model_copy(update={"lora": None}), tokenizer)
    ref.load_state_dict(policy.state_dict())  # tiny:… models are random: copy, do not rebuild
    return ref.to(device).eval().requires_grad_(False), contextlib.nullcontext


def live_reference(
    model: torch.nn.Module, context: Callable[[], Any], batch: dict[str, Any]
) -> torch.Tensor:
    """(2, n) reference log-probs of a collated batch, computed now (eval mode, no gradient)."""
    with eval_mode(model), torch.no_grad(), context():
        return pair_logps(model, batch)


# a collated batch (with its items' "index") → (2, n) reference log-probs
Reference = Callable[[dict[str, Any]], torch.Tensor]


def pair_references(
    engine: Engine,
    *,
    model: ModelConfig,
    ref_model: str | None,
    mode: str,
    policy: torch.nn.Module,
    tokenizer: Any,
    splits: dict[str, Sequence[EncodedPair]],
    data: PairBatching,
    name: str,
    unit: str,
    compile: bool = False,
) -> dict[str, Reference]:
    """The reference of each split ("train", "validation") of an offline preference trainer:
    `mode` "cached" computes every split's log-probs once before the first step, in eval mode,
    and writes them with a fingerprint of the data (a resumed run reads them back; the model
    that computed them is freed when this returns); "live" computes them batch by batch beside
    the policy. `name` (the command) starts the messages, the progress bars count `unit`
    ("pairs", "examples"); `compile`: the reference model goes through `engine.compile` (a
    no-op when it is the policy itself)."""
    cached = mode == "cached"
    ref_model_, context = reference_model(
        model, ref_model, cached, policy, tokenizer, engine.device
    )
    if compile:
        engine.compile(ref_model_)
    if not cached:
        live = functools.partial(live_reference, ref_model_, context)
        return dict.fromkeys(splits, live)
    items = [it for split_items in splits.values() for it in split_items]
    cache = cached_reference(
        engine,
        engine.run.path / REFERENCE_FILE,
        fingerprint(items, ref_model or model.name_or_path),
        lambda: {
            split: reference_logps(
                ref_model_,
                split_items,
                tokenizer.pad_token_id,
                data,
                context,
                functools.partial(engine.progress, desc=f"{name} reference, {split} {unit}"),
            )
            for split, split_items in splits.items()
        },
        name,
    )
    return {split: functools.partial(_cached_rows, cache[split]) for split in splits}


def _cached_rows(logps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    return logps[:, batch["index"]]


def load_preference_tokenizer(cfg: Any) -> Any:
    """The tokenizer of an offline preference trainer (DPO, KTO: `cfg.model`, `cfg.tokenizer`,
    `cfg.ref_model`, `cfg.data.max_length`), after the checks that need no run directory: a
    tiny:… model names its tokenizer, the model fits `max_length`, the `ref_model` folder
    exists. Each mistake is one line naming its key."""
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
    return tokenizer
