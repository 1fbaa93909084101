"""`rlhfkit sim`: write the simulated world, score replies with the gold scorer.

    rlhfkit sim make --out DIR [--seed N] [--n-sft 2000 ...]
    rlhfkit sim score --input replies.jsonl [--output scored.jsonl]
    rlhfkit sim collect --world DIR --policy MODEL -o pairs.jsonl [--prompts FILE] [-n N] [-k 2]
                        [--red-team]

`collect` samples two replies per prompt from a policy and writes them as preference pairs
labelled by the world's simulated annotators (`rlhfkit.sim.feedback`). `--red-team` collects
harmlessness data as red-teaming does (HH, Bai et al. 2022): only the harmful requests among the
prompts, 8 replies each at temperature 1.5 unless -k / --temperature say otherwise.

`score` reads JSON Lines with a `prompt` (string, or messages list) and a `reply` (or `response`)
per row, checks every row first (a bad row stops it with file, line and field, before anything is
written), then writes each row with `gold`, `family` and `behaviour` added and prints the mean
gold score and behaviour counts per family.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rlhfkit.sim.gold import judge_task
from rlhfkit.sim.make import DEFAULT_SIZES, make_world
from rlhfkit.sim.world import PromptParseError, Task, parse_task

app = typer.Typer(
    help="The simulated feedback world: make data, score replies.", no_args_is_help=True
)


def _bad(path: Path, line: int, field: str, why: str) -> typer.Exit:
    typer.secho(f"{path}:{line}: field '{field}': {why}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def make(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the world to.")],
    seed: Annotated[
        int, typer.Option(help="Seed: the same seed and sizes give identical files.")
    ] = 0,
    n_sft: Annotated[int, typer.Option(help="SFT demonstrations (train).")] = DEFAULT_SIZES[
        "n_sft"
    ],
    n_pref: Annotated[int, typer.Option(help="Preference pairs (train).")] = DEFAULT_SIZES[
        "n_pref"
    ],
    n_pref_test: Annotated[
        int, typer.Option(help="Preference pairs (test, held-out items).")
    ] = DEFAULT_SIZES["n_pref_test"],
    n_ranked: Annotated[int, typer.Option(help="Ranked lists (train).")] = DEFAULT_SIZES[
        "n_ranked"
    ],
    n_prompts: Annotated[int, typer.Option(help="RL prompts (train).")] = DEFAULT_SIZES[
        "n_prompts"
    ],
    n_eval_prompts: Annotated[
        int, typer.Option(help="Evaluation prompts (held-out items).")
    ] = DEFAULT_SIZES["n_eval_prompts"],
    vocab_size: Annotated[
        int, typer.Option(help="Tokenizer vocabulary (0: no tokenizer).")
    ] = DEFAULT_SIZES["vocab_size"],
    agreement: Annotated[
        float, typer.Option(help="Target inter-annotator agreement, in (0.5, 1).")
    ] = DEFAULT_SIZES["agreement"],
    sft_ideal: Annotated[
        float, typer.Option(help="Share of ideal behaviour in SFT demonstrations.")
    ] = DEFAULT_SIZES["sft_ideal"],
) -> None:
    """Write the simulated world (data sets, tokenizer, manifest) to --out."""
    if not 0.5 < agreement < 1.0:
        raise typer.BadParameter(f"must be in (0.5, 1), got {agreement}", param_hint="--agreement")
    manifest = make_world(
        out,
        seed=seed,
        n_sft=n_sft,
        n_pref=n_pref,
        n_pref_test=n_pref_test,
        n_ranked=n_ranked,
        n_prompts=n_prompts,
        n_eval_prompts=n_eval_prompts,
        vocab_size=vocab_size,
        agreement=agreement,
        sft_ideal=sft_ideal,
    )
    ann = manifest["annotators"]
    typer.echo(
        f"wrote {out} in {manifest['generation_seconds']:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    )
    typer.echo(
        f"annotators: temperature {ann['temperature']:.3f}, agreement {ann['measured_agreement']:.3f}, "
        f"gold-preferred reply chosen {ann['measured_gold_win_rate']:.3f}"
    )


def _read_rows(path: Path) -> list[tuple[Task, str, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise _bad(path, line, "<bytes>", "not valid UTF-8") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, line_no, "<row>", f"not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise _bad(path, line_no, "<row>", "expected a JSON object")
        if "prompt" not in row:
            raise _bad(path, line_no, "prompt", "missing")
        reply_key = "reply" if "reply" in row else "response"
        reply = row.get(reply_key)
        if not isinstance(reply, str):
            raise _bad(
                path, line_no, "reply", "missing or not a string (give 'reply' or 'response')"
            )
        if not isinstance(row["prompt"], str | list):
            raise _bad(path, line_no, "prompt", "must be a string or a messages list")
        try:
            task = parse_task(row["prompt"])
        except PromptParseError as e:
            raise _bad(path, line_no, "prompt", str(e)) from None
        rows.append((task, reply, row))
    return rows


@app.command()
def score(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="JSONL with prompt and reply per row.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write scored rows.")
    ] = None,
) -> None:
    """Score replies with the gold scorer."""
    if not input.is_file():
        raise typer.BadParameter(f"no such file: {input}", param_hint="--input")
    rows = _read_rows(input)
    per_family: dict[str, list[float]] = defaultdict(list)
    behaviours: dict[str, Counter[str]] = defaultdict(Counter)
    scored = []
    for task, reply, row in rows:
        verdict = judge_task(task, reply)
        per_family[verdict.family].append(verdict.score)
        behaviours[verdict.family][verdict.behaviour] += 1
        scored.append(
            {**row, "gold": verdict.score, "family": verdict.family, "behaviour": verdict.behaviour}
        )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as f:
            for row in scored:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    table = Table(title=f"gold scores of {input} ({len(rows)} replies)")
    for column in ("family", "n", "mean gold", "behaviours"):
        table.add_column(column)
    for family in sorted(per_family):
        values = per_family[family]
        counts = ", ".join(f"{b} {n}" for b, n in behaviours[family].most_common())
        table.add_row(family, str(len(values)), f"{sum(values) / len(values):.3f}", counts)
    all_scores = [s for v in per_family.values() for s in v]
    if all_scores:
        table.add_row("all", str(len(all_scores)), f"{sum(all_scores) / len(all_scores):.3f}", "")
    Console().print(table)


@app.command()
def collect(
    world: Annotated[
        Path, typer.Option("--world", help="World folder (its manifest gives the annotators).")
    ],
    policy: Annotated[Path, typer.Option("--policy", help="Policy model folder to sample from.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Preference JSONL to write.")],
    prompts: Annotated[
        Path | None,
        typer.Option(help="Prompt JSONL (default: WORLD/prompts/train.jsonl, training items)."),
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Prompts to use (0: all).")] = 0,
    k: Annotated[
        int | None,
        typer.Option(
            "-k", help="Samples per prompt: 2 writes pairs, more writes rankings [2; red team 8]."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature [1.0; red team 1.5].")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 32,
    seed: Annotated[int, typer.Option(help="Sampling and labelling seed.")] = 0,
    server: Annotated[
        str | None,
        typer.Option(help="Label through a running `rlhfkit label serve` at this URL (k = 2)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Admin API token for --server (default $RLHFKIT_LABEL_TOKEN)."),
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Project to create on --server (default sim-collect-SEED).")
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="comparison, or rating: each of the k replies rated on its own "
            "(thumbs or Likert, the ratings rows `rlhfkit kto` reads; see rlhfkit.sim.ratings)."
        ),
    ] = "comparison",
    scale: Annotated[str, typer.Option(help="--kind rating: thumbs, 1-5 or 1-7.")] = "thumbs",
    aspects: Annotated[
        str | None,
        typer.Option(help="--kind rating: aspects, e.g. helpful:1-7,harmless (default overall)."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option(
            help="--kind rating, Likert: score >= THRESHOLD is desirable (default: above the middle; the middle dropped)."
        ),
    ] = None,
    red_team: Annotated[
        bool,
        typer.Option(
            "--red-team",
            help="Harmlessness data: only the harmful requests, replies drawn to comply "
            "(rlhfkit.sim.feedback.collect_red_team).",
        ),
    ] = False,
) -> None:
    """Sample k replies per prompt from a policy and have the simulated annotators compare them
    (on-policy pairs, or rankings for `rlhfkit rm data.ranked=true`; see rlhfkit.sim.feedback),
    or rate each (`--kind rating`; see rlhfkit.sim.ratings). With --server they label through
    the label app's API (rlhfkit.sim.remote)."""
    from rich.progress import Progress

    from rlhfkit.data import read_prompts
    from rlhfkit.data.readers import require_records
    from rlhfkit.errors import fail, reported
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.feedback import annotators_from_manifest, collect_comparisons, gold_choices

    if kind not in ("comparison", "rating"):
        fail(f"--kind must be comparison or rating, got {kind!r}")
    if red_team and kind == "rating":
        fail("--red-team collects comparisons; it cannot be combined with --kind rating")
    k = k if k is not None else (8 if red_team else 2)
    temperature = temperature if temperature is not None else (1.5 if red_team else 1.0)
    if k < (1 if kind == "rating" else 2) or n < 0 or temperature <= 0:
        fail(
            f"-k must be at least 2 (rating: 1), -n at least 0, --temperature above 0; "
            f"got k={k}, n={n}, temperature={temperature}"
        )
    if kind == "rating":
        from rlhfkit.sim.ratings import check_rating_options

        rating_aspects = check_rating_options(scale, aspects, threshold)  # one line, before work
    with reported():  # a missing world, an empty prompt file, a missing policy: one line
        annotators = annotators_from_manifest(world)
        source = prompts or world / "prompts" / "train.jsonl"
        records = require_records(read_prompts(source), source, "prompts").records
        records = records[:n] if n else records
        if red_team:
            from rlhfkit.sim.feedback import harmful_prompts

            records = harmful_prompts(records)
            if not records:
                fail(f"--red-team: {source} holds no harmful request to red-team")
        model = load_policy(ModelConfig(name_or_path=str(policy)))
        tokenizer = load_tokenizer(policy, "--policy")
    cfg = RolloutConfig(temperature=temperature, max_new_tokens=max_new_tokens)
    if kind == "rating":
        from rlhfkit.sim.ratings import collect_ratings_command

        collect_ratings_command(
            model, tokenizer, records, annotators, cfg, rating_aspects, output,
            seed=seed, k=k, threshold=threshold, server=server, token=token, project=project,
        )  # fmt: skip
        return
    if server is not None:
        import os

        from rlhfkit.sim.feedback import sample_replies
        from rlhfkit.sim.remote import collect_through_server

        token = token or os.environ.get("RLHFKIT_LABEL_TOKEN")
        if k != 2 or not token:
            raise typer.BadParameter("needs -k 2 and an admin token", param_hint="--server")
        samples = sample_replies(model, tokenizer, records, cfg, seed=seed, k=k)
        try:
            rows = collect_through_server(
                server, token, project or f"sim-collect-{seed}", records, samples, annotators, seed
            )
        except RuntimeError as e:  # the server's answer, or no server (rlhfkit.sim.remote)
            typer.secho(f"error: {server}: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    else:
        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("sampling", total=k * len(records))
            rows = collect_comparisons(
                model, tokenizer, records, annotators, cfg, seed=seed, k=k,
                progress=lambda done, total: bar.update(task, completed=done),
                source="red_team" if red_team else "policy",
            )  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    tmp.replace(output)
    if k > 2:
        typer.echo(f"wrote {len(rows)} rankings of up to {k} replies to {output}")
        return
    agree, decided = gold_choices(rows)
    typer.echo(
        f"wrote {len(rows)} comparisons to {output} ({len(records) - len(rows)} prompts gave two "
        f"identical replies); the gold-better reply was chosen in {agree}/{decided}"
    )
