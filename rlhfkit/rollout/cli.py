"""`rlhfkit rollout serve`: a vLLM rollout engine behind HTTP, for trainers run with
`rollout.engine=vllm_server rollout.vllm.url=http://HOST:PORT` (docs/rollout.md).

It may run in its own virtual environment (vLLM pins its own torch / transformers): that
environment needs vLLM and rlhfkit (`pip install --no-deps -e .` next to vLLM is enough for the
server's imports)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Rollout engines: serve a vLLM engine.", no_args_is_help=True, add_completion=False
)


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="model folder the engine loads (the policy's start)")],
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 8000,
    host: Annotated[
        str, typer.Option(help="address to bind (no authentication: keep it private)")
    ] = "127.0.0.1",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    max_model_len: Annotated[int | None, typer.Option(help="longest prompt + reply")] = None,
    kv_cache_gib: Annotated[int, typer.Option(help="CPU KV-cache space in GiB")] = 1,
    gpu_memory_utilization: Annotated[float, typer.Option(help="share of GPU memory")] = 0.9,
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs the engine spans")] = 1,
    seed: Annotated[int, typer.Option(help="engine seed (rows are seeded per request)")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Load MODEL into vLLM and serve generate / weights / health until interrupted."""
    from rlhfkit.errors import reported
    from rlhfkit.rollout.engines.config import VLLMConfig
    from rlhfkit.rollout.engines.serve import serve as run

    with reported():
        cfg = VLLMConfig(
            dtype=dtype, max_model_len=max_model_len, cpu_kvcache_space_gib=kv_cache_gib,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
        )  # fmt: skip
        run(model, host, port, cfg, seed, threads)
