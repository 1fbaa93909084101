"""`rlhfkit rollout serve`: a vLLM engine behind HTTP for trainers with `rollout.engine:
vllm_server` (the protocol is in `server.py`). One engine, requests served one at a time (vLLM
batches each request's rows itself); `--host 127.0.0.1` by default: the server runs model code
on request and has no authentication, so expose it only on a trusted network."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rlhfkit.rollout.engines.config import VLLMConfig
from rlhfkit.rollout.engines.vllm import VLLMEngine, sampling_params
from rlhfkit.rollout.generate import RolloutConfig

__all__ = ["make_app", "serve"]


def make_app(engine: VLLMEngine, model: str) -> Any:
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="rlhfkit rollout server")
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model, "weights_version": engine.weights_version}

    @app.post("/generate")
    def generate(body: dict[str, Any]) -> dict[str, Any]:
        try:
            cfg = RolloutConfig.model_validate(body.get("rollout", {}))
            prompts, seeds = body["prompts"], body["seeds"]
            eos_ids, keep = list(body.get("eos_ids", [])), bool(body.get("keep_logprobs", True))
            if len(prompts) != len(seeds):
                raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(422, f"bad generate request: {exc}") from None
        params = [sampling_params(engine.vllm, cfg, int(s), eos_ids, keep) for s in seeds]
        requests = [{"prompt_token_ids": [int(t) for t in ids]} for ids in prompts]
        with lock:
            outputs = engine.llm.generate(requests, params, use_tqdm=False)
        completions = []
        for out in outputs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = [c.logprobs[t][tok].logprob for t, tok in enumerate(ids)] if keep else None
            completions.append([ids, lps, c.finish_reason])
        return {"completions": completions}

    @app.post("/weights")
    def weights(body: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import load_file

        path = Path(str(body.get("path", ""))) / "model.safetensors"
        if not path.is_file():
            raise HTTPException(422, f"no weights file at {path}")
        tensors = load_file(str(path))
        with lock:
            engine.push_weights(tensors.items(), int(body.get("version", 0)))
        return {"status": "ok", "weights_version": engine.weights_version}

    return app


def serve(
    model: str, host: str, port: int, cfg: VLLMConfig, seed: int, threads: int | None
) -> None:
    """Load `model` into a vLLM engine and serve it until interrupted."""
    import torch
    import uvicorn

    from rlhfkit.models import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(model, "--model")
    engine = VLLMEngine(model, tokenizer, cfg, seed=seed)
    engine.weights_version = 0
    uvicorn.run(make_app(engine, model), host=host, port=port, log_level="warning")
