"""`rlhfkit eval env`: a saved policy played in an environment on held-out prompts.

    rlhfkit eval env --policy DIR --prompts FILE --env package.module:Factory
                     [--env-arg key=value ...] [--max-turns 4] [--max-tokens 256]
                     [--max-new-tokens 32] [--temperature 1.0] [--limit N] [--seed 0] --out DIR

Writes OUT/env_summary.json (success rate, return, turns, tool calls, invalid calls, tool
errors, truncations, errors; means with their 95 % half-widths, `*_ci`) and OUT/transcripts.jsonl
(one episode per prompt: messages, reward, turns, tool calls, end, errors). The episodes are the
training driver's (`env.evaluate_env`), seeded from `--seed`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["evaluate_policy_in_env", "parse_env_args"]


def parse_env_args(specs: list[str]) -> dict[str, Any]:
    """`key=value` pairs, each value read as a YAML scalar (`0.1` → float, `hermes` → str)."""
    import yaml

    from rlhfkit.config import ConfigError

    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env-arg {spec!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def evaluate_policy_in_env(
    policy_dir: str | Path,
    prompts: str | Path,
    env: str,
    out: str | Path,
    *,
    env_args: dict[str, Any] | None = None,
    max_turns: int = 4,
    max_tokens: int = 256,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Play one episode per prompt (the first `limit`), write the summary and the transcripts;
    returns the summary. Bad input (a factory that does not import, a bad prompts file) is one
    line before OUT is written."""
    from rlhfkit.env import EpisodeConfig, build_env, evaluate_env
    from rlhfkit.models import ModelConfig, check_source, load_policy, load_tokenizer
    from rlhfkit.rollout import OnlineModels, PromptDataConfig, RolloutConfig, read_prompt_source

    check_source(str(policy_dir), "--policy")
    episode = EpisodeConfig(max_turns=max_turns, max_tokens=max_tokens)
    rollout_env = build_env(SimpleNamespace(env=env, env_args=env_args or {}, episode=episode))
    tokenizer = load_tokenizer(str(policy_dir), "--policy")
    source = read_prompt_source(str(prompts), tokenizer, PromptDataConfig(), seed=seed, limit=limit)
    policy = load_policy(ModelConfig(name_or_path=str(policy_dir))).eval()
    models = OnlineModels(policy, tokenizer, None, use_ref=False)  # type: ignore[arg-type]
    cfg = RolloutConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    metrics, rows = evaluate_env(rollout_env, models, source, cfg, seed)
    summary = {k.removeprefix("eval/env/"): v for k, v in metrics.items()}
    summary["episodes"] = len(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "env_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "transcripts.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return summary
