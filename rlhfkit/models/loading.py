"""Loading tokenizers and causal LMs (the policy and the reference), with LoRA and checkpointing.

Implementation details and their sources:

1. A tokenizer without a pad token gets one from `rlhfkit.data.ensure_pad_token` (UNK, else
   EOS), so no embedding row has to be added; since pad may equal EOS, every consumer finds
   real tokens from the attention mask, never by comparing ids with the pad id (`ScalarModel`).
2. dtype "auto" picks bfloat16 only where the hardware runs it natively (a CUDA device with
   `torch.cuda.is_bf16_supported()`); on CPU it stays float32, since bf16 *parameters* lose
   precision in the optimiser update. CPU bf16 speed comes from autocast instead
   (`engine.mixed_precision=bf16`), which keeps float32 master weights.
3. LoRA through peft (`LoraConfig` + `get_peft_model`); "all-linear" is peft's own shortcut that
   skips the output head. With gradient checkpointing and LoRA the input embeddings must
   require grad or no gradient reaches the adapters (`enable_input_require_grads`, as in
   peft's docs and TRL's `SFTTrainer`).
4. GPT-2-family configs with `activation_function: gelu_new` load with `gelu_pytorch_tanh`:
   both are 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (max difference 2.4e-7 in float32,
   tested), but the latter is one fused kernel (`F.gelu(approximate="tanh")`) instead of
   eight elementwise passes forward and more backward — 10-20 % of a tiny GPT-2's training step
   on CPU (interleaved A/B, noisy 2-core host). Saved folders then name the fused variant.
5. Gradient checkpointing uses transformers' non-reentrant variant (`use_reentrant=False`),
   which works with frozen inputs and with DDP. transformers checkpoints a layer only while that
   layer is in training mode, but `.train()` / `.eval()` is also the dropout switch, and PPO, the
   pg trainers, DPO and the RM with `disable_dropout` train in eval mode (no dropout) — where
   checkpointing silently did nothing. So each checkpointed layer gets a forward pre-hook that
   sets *its own* `training` flag before every call: the layer then checkpoints whenever
   gradients are on, while its children (dropout, attention) keep the model's mode. Decoder
   layers read no `training` flag of their own (checked for GPT-2, Llama, Qwen2/3, Mistral,
   Gemma, Phi-3), so this changes when activations are recomputed and nothing else. Under
   `torch.no_grad` (generation, scoring) transformers never checkpoints, and the KV cache stays.
6. A model or tokenizer name is checked before anything loads (`check_source`): a missing local
   folder, a name that cannot be a hub repo id, or a hub name while the hub is unreachable and
   the name is not in the local cache is one `FileNotFoundError` naming the config key, at
   once (transformers would retry the network for about a minute, then print four chained
   tracebacks). `check_fits` compares the configured lengths with the model's positions.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhfkit.config import ConfigError
from rlhfkit.data import ensure_pad_token
from rlhfkit.models.activations import use_fast_gelu
from rlhfkit.models.attention import use_fp32_cpu_attention
from rlhfkit.models.config import DType, LoraSettings, ModelConfig

__all__ = [
    "apply_lora",
    "check_fits",
    "checkpointed_layers",
    "check_source",
    "enable_gradient_checkpointing",
    "load_policy",
    "load_tokenizer",
    "resolve_dtype",
]

TINY_PREFIX = "tiny:"


def resolve_dtype(dtype: DType | torch.dtype) -> torch.dtype:
    """ "auto" → bfloat16 on a bf16-capable GPU, float32 elsewhere; names → torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` seconds (and the
    user has not switched it off with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("", "0"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        if isinstance(try_to_load_from_cache(name, filename), str):
            return True
    return False


def check_source(name_or_path: str | Path, key: str, kind: str = "model") -> None:
    """Raise `FileNotFoundError` naming `key` unless `name_or_path` is a local folder or a hub
    name that can load (in the local cache, or the hub reachable). Fails in seconds, never
    after transformers' network retries (module docstring, point 6)."""
    name = str(name_or_path)
    if not name:
        raise FileNotFoundError(f"{key} is empty: give a local {kind} folder or a hub name")
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise FileNotFoundError(f"{key}: {name} is a file, not a {kind} folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    looks_local = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1
    try:
        validate_repo_id(name)
    except HFValidationError:
        looks_local = True
    if looks_local:
        raise FileNotFoundError(f"{key}: {name} is not a local {kind} folder (no such directory)")
    if _in_hub_cache(name):
        return
    if not _hub_reachable():
        raise FileNotFoundError(
            f"{key}: {name!r} is not a local {kind} folder, and as a hub name it cannot be"
            " fetched: the Hugging Face hub is not reachable (offline) and it is not in the"
            " local cache"
        )


def _from_hub_or_folder(load: Any, name: str, key: str, kind: str, **kwargs: Any) -> Any:
    """`load(name, **kwargs)` after `check_source`; an OSError from transformers (a folder
    without the files, a hub name that does not exist) becomes one line naming `key`."""
    check_source(name, key, kind)
    if name.startswith("~"):  # transformers does not expand a home folder
        name = str(Path(name).expanduser())
    try:
        return load(name, **kwargs)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"{key}: cannot load a {kind} from {name!r}: {first}") from e


def load_tokenizer(
    name_or_path: str | Path, key: str = "tokenizer", **kwargs: Any
) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained` with a pad token guaranteed (`data.ensure_pad_token`:
    UNK, else EOS, else a new `<pad>`, in which case the model's embeddings need resizing).
    A missing folder or unreachable hub name is a `FileNotFoundError` naming `key`."""
    kind = "tokenizer" if key == "tokenizer" else "model"  # e.g. from model.name_or_path
    tokenizer = _from_hub_or_folder(
        AutoTokenizer.from_pretrained, str(name_or_path), key, kind, **kwargs
    )
    ensure_pad_token(tokenizer)
    return tokenizer


def _model_config(cfg: ModelConfig) -> Any:
    """The model's `AutoConfig` (a missing or unreachable source: `FileNotFoundError`)."""
    return _from_hub_or_folder(
        AutoConfig.from_pretrained,
        cfg.name_or_path,
        "model.name_or_path",
        "model",
        trust_remote_code=cfg.trust_remote_code,
    )


def max_positions(cfg: ModelConfig) -> int | None:
    """The longest sequence `cfg`'s model takes (its position table), or None when the config
    does not say (rotary models without a limit)."""
    if cfg.name_or_path.startswith(TINY_PREFIX):
        from rlhfkit.models.tiny import PRESETS

        size = cfg.name_or_path[len(TINY_PREFIX) :].partition("-")[2]
        return PRESETS[size]["context"] if size in PRESETS else None
    config = _model_config(cfg)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(cfg: ModelConfig, max_length: int, key: str = "data.max_length") -> None:
    """Raise `ConfigError` when sequences of `max_length` tokens do not fit the model's
    position table."""
    limit = max_positions(cfg)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"{key}={max_length} does not fit the model {cfg.name_or_path!r}, which takes at most"
            f" {limit} positions: lower {key} to {limit} or less"
        )


def _from_pretrained_kwargs(cfg: ModelConfig, **config_overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained`, with the config loaded here so it can be
    adjusted first (the fused GELU, see the module docstring; `config_overrides`)."""
    config = _model_config(cfg)
    if getattr(config, "activation_function", None) == "gelu_new":
        config.activation_function = "gelu_pytorch_tanh"  # the same function, one fused kernel
    for key, value in config_overrides.items():
        setattr(config, key, value)
    kwargs: dict[str, Any] = {
        "config": config,
        "dtype": resolve_dtype(cfg.dtype),
        "trust_remote_code": cfg.trust_remote_code,
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return kwargs


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Turn on non-reentrant activation checkpointing in every decoder layer, in training and
    in eval mode alike (module docstring, point 5); input grads are added under LoRA."""
    kwargs = {"use_reentrant": False}
    # transformers 5.2x renamed gradient_checkpointing_* to activation_checkpointing_*
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a KV cache is useless in training and conflicts with it
    for layer in checkpointed_layers(model):
        if not getattr(layer, _MODE_HOOK, False):
            layer.register_forward_pre_hook(_checkpoint_in_any_mode)
            setattr(layer, _MODE_HOOK, True)


_MODE_HOOK = "_rlhfkit_checkpoints_in_any_mode"


def _checkpoint_in_any_mode(layer: torch.nn.Module, args: Any) -> None:
    layer.training = True  # the layer's own flag only: its dropout children keep their mode


def checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of `model` whose activations are recomputed in the backward pass."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [
        m
        for m in model.modules()
        if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing
    ]


def is_checkpointing(model: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on in some layer of `model`."""
    return bool(checkpointed_layers(model))


def apply_lora(model: PreTrainedModel, lora: LoraSettings, task_type: str, head: str | None = None):
    """Wrap `model` with LoRA adapters; `head` names a module trained in full (the scalar head).

    Only adapter weights (and `head`) require grad afterwards. Returns the `PeftModel`; the
    wrapped modules are changed in place, so references into `model` stay valid except for
    `head`, which peft replaces by a wrapper (look it up again after this call).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
        modules_to_save=[head] if head else None,
    )
    peft_model = get_peft_model(model, config)
    if is_checkpointing(model):
        model.enable_input_require_grads()
    return peft_model


def load_policy(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None
) -> PreTrainedModel:
    """A causal LM from `cfg.name_or_path` with the configured dtype, checkpointing and LoRA.

    The result is a `transformers` causal LM, or a `peft.PeftModel` wrapping one when
    `cfg.lora` is set (its `disable_adapter()` context then gives the reference model for free).
    `name_or_path = "tiny:ARCH-SIZE"` (e.g. `tiny:gpt2-micro`, see `models.tiny`) builds a
    random-init tiny model for `tokenizer` instead (seeded by `torch.initial_seed()`), for CPU
    runs on the simulated world.
    """
    if cfg.name_or_path.startswith(TINY_PREFIX):
        model = _build_tiny(cfg.name_or_path, tokenizer).to(resolve_dtype(cfg.dtype))
    else:
        model = _from_hub_or_folder(
            AutoModelForCausalLM.from_pretrained,
            cfg.name_or_path,
            "model.name_or_path",
            "model",
            **_from_pretrained_kwargs(cfg),
        )
    use_fp32_cpu_attention(model)  # "sdpa" stays float32 on CPU under bf16 (models.attention)
    use_fast_gelu(model)  # tanh GELU in cache-sized pieces on CPU (models.activations)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, task_type="CAUSAL_LM")
    return model


def _build_tiny(spec: str, tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedModel:
    from rlhfkit.models.tiny import PRESETS, build_tiny_model

    arch, _, size = spec[len(TINY_PREFIX) :].partition("-")
    if arch not in ("gpt2", "llama") or size not in PRESETS:
        raise ValueError(
            f"model.name_or_path {spec!r}: expected tiny:ARCH-SIZE with ARCH gpt2 or llama and "
            f"SIZE one of {sorted(PRESETS)}"
        )
    if tokenizer is None:
        raise ValueError(f"model.name_or_path {spec!r}: a tiny model needs a tokenizer")
    seed = torch.initial_seed() % 2**31
    return build_tiny_model(arch, size, tokenizer=tokenizer, seed=seed)  # type: ignore[arg-type]
