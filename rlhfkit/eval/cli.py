"""`rlhfkit eval ...`: evaluate policies on a prompt set, and (re)build a run's HTML report.

    rlhfkit eval run --policy sft=DIR --policy ppo=DIR [--policy ...] --prompts FILE
                     [--reward-model DIR] [--ref DIR] [--gold]
                     [--judge-model DIR | --judge-url URL --judge-api-model NAME
                      [--judge-api-key-env VAR]] [--judge-template FILE]
                     [--temperature T] [--top-k K] [--max-new-tokens N]
                     [--engine local|vllm|vllm_server [--engine-url URL]] --out DIR
    rlhfkit eval report RUN [--out FILE]

`eval run` writes OUT/<name>.jsonl (one row per prompt: reply, RM score, KL, gold …) and
OUT/eval_summary.json, prints a table, and the win rate of every policy against the first one,
with its 95 % Wilson interval, under each judge given: the gold scorer (`--gold`, the simulated
world), the reward model (`--reward-model`: the higher score wins, ties half), and a pairwise
LLM judge (`--judge-model` a local causal LM, or `--judge-url` an OpenAI-compatible endpoint
with its key in the environment variable `--judge-api-key-env`) asked in both orders, whose
order-dependent verdicts count as ties; its position-inconsistency rate is reported and every
judgment saved to OUT/judgments_<name>_vs_<first>.jsonl (`eval.judges`, `rollout.llm_judge`).

`--engine` picks the rollout engine that samples the replies (docs/rollout.md): the local sampler
(default), vLLM in this process, or a `rlhfkit rollout serve` server at `--engine-url`. One engine
serves every policy in turn: it loads the first policy's model folder (a LoRA policy: its base
model) and each policy's weights are pushed to it before it is sampled, so the policies compared
must share one architecture. Log-probs for the KL are computed with each policy itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Evaluate policies (judges, win rates, KL, refusals) and build run reports.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    from rlhfkit.errors import fail

    fail(message)


@app.command("report")
def report(
    run: Annotated[Path, typer.Argument(help="run directory (e.g. the demo's --out)")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default RUN/report.html)")] = None,
) -> None:
    """Build RUN/report.html from the run's saved summary, metrics and samples."""
    from rlhfkit.eval.report import build_report

    try:
        path = build_report(run, out)
    except (FileNotFoundError, ValueError) as e:
        _fail(f"error: {e}")
    typer.echo(f"report: {path}")


@app.command("env")
def env(
    policy: Annotated[Path, typer.Option(help="a saved policy folder")],
    prompts: Annotated[Path, typer.Option(help="prompts file (any reader format)")],
    env: Annotated[str, typer.Option(help="environment factory, package.module:Factory")],
    out: Annotated[Path, typer.Option(help="output directory")],
    env_arg: Annotated[
        list[str] | None, typer.Option(help="key=value for the factory; repeat")
    ] = None,
    max_turns: Annotated[int, typer.Option(help="policy turns per episode")] = 4,
    max_tokens: Annotated[int, typer.Option(help="token budget of an episode")] = 256,
    max_new_tokens: Annotated[int, typer.Option(help="longest reply in tokens")] = 32,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 1.0,
    limit: Annotated[int, typer.Option(help="evaluate at most N prompts (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
) -> None:
    """Play POLICY in an environment, one episode per prompt: success, return, turns, tool
    calls, truncations (95 % intervals) in OUT/env_summary.json, transcripts in
    OUT/transcripts.jsonl (docs/env.md)."""
    from rlhfkit.errors import reported
    from rlhfkit.eval.env import evaluate_policy_in_env, parse_env_args

    with reported():
        summary = evaluate_policy_in_env(
            policy, prompts, env, out, env_args=parse_env_args(env_arg or []),
            max_turns=max_turns, max_tokens=max_tokens, max_new_tokens=max_new_tokens,
            temperature=temperature, limit=limit or None, seed=seed,
        )  # fmt: skip
    for key, value in summary.items():
        if not key.endswith("_ci"):
            ci = summary.get(f"{key}_ci")
            typer.echo(f"{key:>16}: {value:.4g}" + (f" ± {ci:.3g}" if ci is not None else ""))
    typer.echo(f"transcripts: {out / 'transcripts.jsonl'}")


def _parse_policies(specs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            _fail(f"--policy {spec!r}: expected NAME=DIR, e.g. --policy sft=runs/demo/sft/model")
        if not Path(path).is_dir():
            _fail(f"--policy {spec!r}: {path} is not a model directory")
        out.append((name, Path(path)))
    if len({n for n, _ in out}) != len(out):
        _fail("--policy names must be distinct")
    return out


def _eval_engine(cfg, tok, first: Path, tokenizer: Path | None, seed: int, out: Path):
    """The rollout engine `--engine` names (None: the local sampler, made per policy). A vLLM
    engine loads the first policy's folder, or the base model a LoRA adapter folder names."""
    from rlhfkit.rollout import build_engine

    if cfg.engine == "local":
        return None
    model_path = str(first)
    adapter = first / "adapter_config.json"
    if adapter.is_file():
        model_path = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
    return build_engine(
        cfg, tok, model_path=model_path, weights_dir=out / "rollout_weights", seed=seed,
        tokenizer_path=str(tokenizer) if tokenizer else str(first),
    )  # fmt: skip


def _make_judge(
    model: Path | None, url: str | None, api_model: str | None, key_env: str, template: Path | None
):
    """The pairwise LLM judge the options name (`rollout.llm_judge.JudgeConfig`), or None."""
    if model is None and url is None:
        return None
    if model is not None and url is not None:
        _fail("give --judge-model or --judge-url, not both")
    if url is not None and not api_model:
        _fail("--judge-url needs --judge-api-model (the model name the endpoint serves)")
    if model is not None and not model.is_dir():
        _fail(f"--judge-model: {model} is not a model directory")
    from rlhfkit.rollout.llm_judge import JudgeConfig, build_judge

    cfg = JudgeConfig(
        model=str(model) if model else None, url=url, api_model=api_model,
        api_key_env=key_env, template=str(template) if template else None,
    )  # fmt: skip
    try:
        return build_judge(cfg, key="--judge")
    except ValueError as e:  # the template: "--judge.template: …"
        _fail(str(e).replace("--judge.template", "--judge-template"))


@app.command("run")
def run(
    policy: Annotated[
        list[str], typer.Option(help="NAME=DIR of a saved policy; repeat to compare")
    ],
    prompts: Annotated[Path, typer.Option(help="prompts file (JSONL/CSV/...; any reader format)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    reward_model: Annotated[Path | None, typer.Option(help="reward model directory")] = None,
    ref: Annotated[Path | None, typer.Option(help="reference policy directory, for KL")] = None,
    gold: Annotated[
        bool, typer.Option(help="judge with the simulated world's gold scorer")
    ] = False,
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer (default: the first policy's)")
    ] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    top_k: Annotated[int, typer.Option(help="sample from the K likeliest tokens (0: all)")] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="longest reply in tokens")] = 48,
    limit: Annotated[int, typer.Option(help="evaluate at most N prompts (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    engine: Annotated[
        str, typer.Option(help="rollout engine: local, vllm or vllm_server (docs/rollout.md)")
    ] = "local",
    engine_url: Annotated[
        str | None, typer.Option(help="the rollout server's URL (--engine vllm_server)")
    ] = None,
    judge_model: Annotated[
        Path | None, typer.Option(help="a local causal LM folder as the pairwise judge")
    ] = None,
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    ] = None,
    judge_api_model: Annotated[str | None, typer.Option(help="model name at --judge-url")] = None,
    judge_api_key_env: Annotated[
        str, typer.Option(help="environment variable holding the endpoint's API key")
    ] = "OPENAI_API_KEY",
    judge_template: Annotated[
        Path | None, typer.Option(help="judge prompt template (default: rlhfkit's, see docs)")
    ] = None,
) -> None:
    """Sample replies from each policy on PROMPTS and score them; compare to the first policy."""
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.data import read_prompts
    from rlhfkit.data.readers import require_records
    from rlhfkit.errors import reported
    from rlhfkit.eval.evaluate import compare_policies, evaluate_policy
    from rlhfkit.eval.judges import judge_both_orders, score_outcomes
    from rlhfkit.eval.winrate import win_rate
    from rlhfkit.models import (
        ModelConfig,
        check_source,
        load_policy,
        load_reward_model,
        load_tokenizer,
    )
    from rlhfkit.rollout import RolloutConfig, sync_weights

    specs = _parse_policies(policy)
    if limit < 0:
        _fail(f"--limit must be 0 (all) or positive, got {limit}")
    with reported():  # a bad prompts file or a missing folder: one line, exit status 2
        judge = _make_judge(
            judge_model, judge_url, judge_api_model, judge_api_key_env, judge_template
        )
        records = require_records(read_prompts(prompts), prompts, "prompts").records
        if limit:
            records = records[:limit]
        if reward_model:  # every folder checked before any model loads or --out is made
            check_source(reward_model, "--reward-model")
        if ref:
            check_source(ref, "--ref")
        tok = load_tokenizer(tokenizer or specs[0][1], "--tokenizer")
        rm = load_reward_model(reward_model) if reward_model else None
        ref_model = load_policy(ModelConfig(name_or_path=str(ref))) if ref else None
    if engine not in ("local", "vllm", "vllm_server"):
        _fail(f"--engine must be local, vllm or vllm_server, got {engine!r}")
    if top_k < 0:
        _fail(f"--top-k must be 0 (all tokens) or positive, got {top_k}")
    with reported():  # vLLM missing or a model it cannot run: one line before --out is made
        vllm = {"url": engine_url} if engine_url else {}
        cfg = RolloutConfig(
            temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens, batch_size=32,
            engine=engine, vllm=vllm,
        )  # fmt: skip
        sampler = _eval_engine(cfg, tok, specs[0][1], tokenizer, seed, out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    results = []
    for version, (name, path) in enumerate(specs, start=1):
        model = load_policy(ModelConfig(name_or_path=str(path)))
        if sampler is not None:
            with reported():
                sync_weights(sampler, model, version)
        console.print(f"[bold]eval[/] {name}: {len(records)} prompts")
        res = evaluate_policy(
            model, tok, records, cfg, seed=seed, name=name,
            ref_policy=ref_model, reward_model=rm, gold=gold, engine=sampler,
        )  # fmt: skip
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in res.rows()), encoding="utf-8"
        )
        results.append(res)
    summary = {r.name: r.summary() for r in results}
    first = results[0]
    lines = []
    for r in results[1:]:
        if gold:
            wr = compare_policies(r, first)
            summary[r.name][f"win_rate_vs_{first.name}"] = wr.to_dict()
            lines.append(f"win rate {r.name} vs {first.name} (gold): {wr}")
        if rm is not None:
            wr = win_rate(score_outcomes(r.rm_scores, first.rm_scores))
            summary[r.name][f"rm_win_rate_vs_{first.name}"] = wr.to_dict()
            lines.append(f"win rate {r.name} vs {first.name} (reward model): {wr}")
        if judge is not None:
            console.print(f"[bold]judge[/] {r.name} vs {first.name}: {len(records)} × 2 orders")
            rep = judge_both_orders(judge, [p.prompt for p in records], r.replies, first.replies)
            summary[r.name][f"judge_win_rate_vs_{first.name}"] = rep.to_dict()
            path = out / f"judgments_{r.name}_vs_{first.name}.jsonl"
            path.write_text(
                "".join(json.dumps(j.to_dict(), ensure_ascii=False) + "\n" for j in rep.judgments),
                encoding="utf-8",
            )
            lines.append(
                f"win rate {r.name} vs {first.name} (LLM judge, both orders): {rep.win_rate}; "
                f"position-inconsistent {100 * rep.inconsistency:.1f}% ({path.name})"
            )
    if sampler is not None:
        sampler.close()
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    table = Table("metric", *(r.name for r in results))
    keys = ["gold_mean", "rm_mean", "kl_to_ref", "perplexity", "mean_words", "repetition_rate",
            "harmful_refusal_rate", "harmful_compliance_rate", "over_refusal_rate"]  # fmt: skip
    for key in keys:
        if any(key in summary[r.name] for r in results):
            table.add_row(key, *(f"{summary[r.name].get(key, float('nan')):.3f}" for r in results))
    Console().print(table)
    for line in lines:
        typer.echo(line)
    typer.echo(f"wrote {out}/eval_summary.json")
