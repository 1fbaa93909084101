"""Rollout engines: what samples the policy's replies (docs/rollout.md).

- `base`: the `RolloutEngine` interface, `EngineError`.
- `local`: rlhfkit's own KV-cached sampler (the default).
- `vllm`: a vLLM `LLM` in the trainer's process (colocated).
- `server`: a client of `rlhfkit rollout serve` (vLLM in its own process or machine), and the
  server itself (`serve`).
- `weights`: the policy's weights under the names a Hugging Face checkpoint uses (LoRA merged,
  FSDP2 gathered) and `sync_weights`, the push every online trainer makes each iteration.
- `build`: `build_engine`, the one place a config becomes an engine.

The package imports nothing at its top, so `rollout.generate` can import `engines.config`
without a cycle; import from the submodules (or from `rlhfkit.rollout`).
"""
