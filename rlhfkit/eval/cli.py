"""`rlhfkit eval ...`: evaluate policies on a prompt set, and (re)build a run's HTML report.

    rlhfkit eval run --policy sft=DIR --policy ppo=DIR --prompts FILE [--reward-model DIR]
                     [--ref DIR] [--gold] [--temperature T] [--max-new-tokens N] --out DIR
    rlhfkit eval report RUN [--out FILE]

`eval run` writes OUT/<name>.jsonl (one row per prompt: reply, RM score, KL, gold …) and
OUT/eval_summary.json, prints a table, and the win rate of every policy against the first one
under the gold judge (when `--gold`) with its 95 % Wilson interval.
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
    max_new_tokens: Annotated[int, typer.Option(help="longest reply in tokens")] = 48,
    limit: Annotated[int, typer.Option(help="evaluate at most N prompts (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
) -> None:
    """Sample replies from each policy on PROMPTS and score them; compare to the first policy."""
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.data import read_prompts
    from rlhfkit.data.readers import require_records
    from rlhfkit.errors import reported
    from rlhfkit.eval.evaluate import compare_policies, evaluate_policy
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig

    specs = _parse_policies(policy)
    if limit < 0:
        _fail(f"--limit must be 0 (all) or positive, got {limit}")
    with reported():  # a bad prompts file or a missing folder: one line, exit status 2
        records = require_records(read_prompts(prompts), prompts, "prompts").records
        if limit:
            records = records[:limit]
        tok = load_tokenizer(tokenizer or specs[0][1], "--tokenizer")
        rm = load_reward_model(reward_model) if reward_model else None
        ref_model = load_policy(ModelConfig(name_or_path=str(ref))) if ref else None
    cfg = RolloutConfig(temperature=temperature, max_new_tokens=max_new_tokens, batch_size=32)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    results = []
    for name, path in specs:
        model = load_policy(ModelConfig(name_or_path=str(path)))
        console.print(f"[bold]eval[/] {name}: {len(records)} prompts")
        res = evaluate_policy(
            model, tok, records, cfg, seed=seed, name=name,
            ref_policy=ref_model, reward_model=rm, gold=gold,
        )  # fmt: skip
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in res.rows()), encoding="utf-8"
        )
        results.append(res)
    summary = {r.name: r.summary() for r in results}
    if gold and len(results) > 1:
        for r in results[1:]:
            summary[r.name][f"win_rate_vs_{results[0].name}"] = compare_policies(
                r, results[0]
            ).to_dict()
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    table = Table("metric", *(r.name for r in results))
    keys = ["gold_mean", "rm_mean", "kl_to_ref", "perplexity", "mean_words", "repetition_rate",
            "harmful_refusal_rate", "harmful_compliance_rate", "over_refusal_rate"]  # fmt: skip
    for key in keys:
        if any(key in summary[r.name] for r in results):
            table.add_row(key, *(f"{summary[r.name].get(key, float('nan')):.3f}" for r in results))
    Console().print(table)
    if gold and len(results) > 1:
        for r in results[1:]:
            typer.echo(
                f"win rate {r.name} vs {results[0].name} (gold): {compare_policies(r, results[0])}"
            )
    typer.echo(f"wrote {out}/eval_summary.json")
