"""`rollout.engine: vllm_server`: the trainer talks over HTTP to `rlhfkit rollout serve`, a vLLM
engine in its own process — on this machine or another, in its own virtual environment if
vLLM's pins clash with the trainer's.

Protocol (JSON; `serve.py` is the other side):
- `GET /health` → {"status": "ok", "model", "weights_version"};
- `POST /generate` {"prompts": [[ids]], "seeds": [int], "rollout": {sampling settings},
  "keep_logprobs"} → {"completions": [[ids, logprobs | null, finish_reason]]};
- `POST /weights` {"path", "version"}: load `path/model.safetensors` (written by the trainer,
  atomically) into the engine and reset its prefix cache.

Weights travel through a folder both sides can read (`rollout.vllm.weights_dir`): on one
machine or a shared file system that is one write and one read of the model per iteration
(≈ 1–2 s for 135 M parameters on CPU), with nothing to install. vLLM's own weight-transfer
engine / NCCL broadcast between GPUs is faster at large sizes but needs GPUs on both sides and
a process group spanning trainer and server; it is not built here (docs/rollout.md).

Every call has `rollout.vllm.timeout_s`. A server that is absent, refuses, answers an error or
dies mid-run raises `EngineError` naming the URL: the run ends with that one line, its last
checkpoint kept, and the same command resumes once the server is back.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.rollout.engines.base import EngineError
from rlhfkit.rollout.engines.config import VLLMConfig
from rlhfkit.rollout.engines.vllm import to_rollout
from rlhfkit.rollout.generate import Rollout, RolloutConfig

__all__ = ["ServerEngine", "request"]

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "stop_strings")


def request(url: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """One JSON call to the server; any failure is an `EngineError` naming the URL."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise EngineError(f"rollout server {url}{path} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EngineError(
            f"rollout server {url} unreachable ({reason}); start `rlhfkit rollout serve` there "
            "and run the same command again: the run resumes from its last checkpoint"
        ) from None


class ServerEngine:
    name = "vllm_server"
    exact = False

    def __init__(self, tokenizer: Any, cfg: VLLMConfig, weights_dir: str | Path) -> None:
        self.tokenizer, self.url, self.timeout = tokenizer, cfg.url, cfg.timeout_s
        self.weights_dir = Path(weights_dir)
        health = request(self.url, "/health", None, self.timeout)
        if health.get("status") != "ok":
            raise EngineError(f"rollout server {self.url} is not ready: {health}")
        self.weights_version = -1  # whatever the server holds, the first sync pushes this run's

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
        mask = prompt_mask.bool().cpu()
        body = {
            "prompts": [ids[m].tolist() for ids, m in zip(prompt_ids.cpu(), mask, strict=True)],
            "seeds": [int(s) for s in seeds.tolist()],
            "rollout": {k: getattr(cfg, k) for k in SAMPLING_KEYS},
            "eos_ids": [eos] if isinstance(eos, int) else list(eos),
            "keep_logprobs": keep_logprobs,
        }
        out = request(self.url, "/generate", body, self.timeout)
        completions = [(ids, lps, reason) for ids, lps, reason in out["completions"]]
        return to_rollout(prompt_ids, prompt_mask, completions, self.tokenizer.pad_token_id)

    def push_weights(self, weights: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        from safetensors.torch import save_file

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.weights_dir / "model.safetensors.tmp"
        # clones: tied embeddings share storage, which safetensors refuses to write twice
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in weights}, str(tmp))
        os.replace(tmp, self.weights_dir / "model.safetensors")
        request(
            self.url, "/weights", {"path": str(self.weights_dir), "version": version}, self.timeout
        )
        self.weights_version = version

    def close(self) -> None:
        pass
