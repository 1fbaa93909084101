"""`rlhfkit demo`: the whole RLHF loop on the simulated world, on a CPU, in minutes.

    world → tokenizer + tiny model → SFT → feedback on SFT samples → red-team feedback on
          harmful requests → reward model → PPO (PPO-Max preset) → PPO without the KL penalty
          (the reward-hacking ablation) → evaluation → summary.json + report.html

Stages, each in its own folder of the output directory DIR:

    DIR/world/        `rlhfkit.sim.make_world`: SFT demos, preference pairs, prompts, tokenizer
    DIR/base/         the randomly initialised tiny causal LM (`rlhfkit.models.tiny`)
    DIR/sft/          `rlhfkit.algos.sft.train` run (model in sft/model)
    DIR/feedback/     `rlhfkit.sim.feedback`: the world's annotators compare two SFT samples per
                      prompt, as InstructGPT's labellers compared model outputs: train.jsonl
                      (training prompts) and test.jsonl (held-out prompts, for evaluation only)
    DIR/redteam/      `rlhfkit.sim.feedback.collect_red_team`: harmlessness data as HH collected
                      it (Bai et al. 2022): k hotter SFT replies to each harmful training request
                      ranked (train.jsonl), two to each held-out harmful request (test.jsonl),
                      info.json (what was drawn)
    DIR/rm_data/      what the RM trains and is evaluated on when sources are joined, and
                      shares.json (each source's share of the comparisons)
    DIR/rm/           `rlhfkit.algos.rm.train` run, initialised from the SFT model (rm/model),
                      on the feedback and red-team rankings (plus the world's own pairs when
                      `feedback.include_world_pairs`), evaluated every `rm.eval_every` steps on
                      the held-out pairs, overall and by aspect (helpful / harmless), family
                      and source
    DIR/ppo/          `rlhfkit.algos.ppo.train` with the `ppo_max` preset and the demo's
                      simulated-world overrides; the gold scorer is passed as a judge, so
                      eval/gold is logged next to eval/rm_score and eval/kl_to_ref
    DIR/ppo_nokl/     the same PPO with kl_coef = 0 (and the ablation's overrides)
    DIR/eval/         held-out evaluation: one JSONL per policy, one per policy on the extra
                      held-out harmful requests ({policy}_harmful.jsonl), samples.jsonl
    DIR/configs/      the exact YAML each trainer ran with (`rlhfkit sft --config ...` reruns it)
    DIR/summary.json  headline figures (`rlhfkit.eval.summary.RunSummary`); DIR/report.html

summary.json keys (typed in `RunSummary`): gold.{sft,ppo,ppo_nokl}_mean, rm.{...}_mean,
win_rate_vs_sft (PPO vs SFT under the gold judge, ties half) with win_rate_ci (95 % Wilson) and
win_rate_detail, kl_to_ref (PPO vs the SFT reference, nats per reply), rm_gold_accuracy (RM
agreement with the gold preference on held-out pairs whose gold scores differ), rm_accuracy (vs the
noisy labels), rm_calibration, per_family {family: {sft, ppo, ppo_nokl, n}}, rates {policy:
{harmful_compliance_rate, over_refusal_rate, ...}} on the eval prompts, harm {policy:
{harmful_compliance, harmful_refusal, over_refusal: {rate, low, high, count, n}}} pooled with the
extra harmful requests (95 % Wilson), rm_gold_agreement_by {aspect/..., family/..., source/...:
{rate, agree, n}}, redteam, behaviours, ablation {kl_coef, rm_change, gold_change, hacked, ...},
goal {win_rate_ok, harmful_ok, harmful_refusal_ok, over_refusal_ok}, timings {stage: seconds},
settings.

`run_demo(..., reuse=STAGE)` takes the stages up to STAGE from an earlier run in the same
directory, `stop_after=STAGE` ends after STAGE, `overrides` are `key=value` over the YAML.

Sizes, iterations and learning rates live in `rlhfkit/configs/demo.yaml` (and `demo_quick.yaml`
for `--quick`): one place to read and tune them, read into `DemoConfig`, so an unknown or
misspelt key is an error naming it (never a stage silently skipped), and each trainer section
is checked against that trainer's config before the first stage runs. Every stage is seeded
from `seed`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from rich.console import Console
from rich.table import Table

from rlhfkit.config import ConfigBase, ConfigError, load_config, merge

if TYPE_CHECKING:
    from rlhfkit.eval.summary import RunSummary

__all__ = ["DemoConfig", "run_demo"]

console = Console(stderr=True)


class DemoModel(ConfigBase):
    arch: Literal["gpt2", "llama"] = "gpt2"
    """Architecture of the tiny model built in code (`rlhfkit.models.tiny`)."""
    size: Literal["nano", "micro", "mini"] = "micro"
    """Size preset: micro is d_model 128, 4 layers, ~0.96 M parameters."""


class FeedbackSettings(ConfigBase):
    n_prompts: int = Field(ge=1)
    """Training prompts whose SFT replies an annotator compares (the RM's training data)."""
    n_test_prompts: int = Field(ge=1)
    """Held-out prompts: two SFT replies each, the RM's evaluation pairs."""
    k: int = Field(2, ge=2)
    """Replies per training prompt; k > 2 gives rankings (ranking loss over all pairs)."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the SFT replies."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled reply in tokens."""
    include_world_pairs: bool = False
    """Also train the RM on the world's sampler-written pairs."""


class RedTeamSettings(ConfigBase):
    """Harmlessness feedback as red-teaming collects it (`rlhfkit.sim.feedback.collect_red_team`,
    the HH recipe of Bai et al. 2022): replies to harmful requests drawn so that compliance turns
    up, compared by the annotators, added to the RM's helpfulness comparisons."""

    n_prompts: int = Field(ge=0)
    """Training prompts scanned for harmful requests (the first n of prompts/train; 0: none)."""
    n_test_prompts: int = Field(ge=0)
    """Held-out harmful requests (prompts/eval_harmful) given two red-team replies each: the RM's
    harmlessness evaluation pairs, next to the harmful pairs of feedback/test."""
    k: int = Field(8, ge=2)
    """Replies per harmful request (ranked when > 2)."""
    temperature: float = Field(1.5, gt=0.0)
    """Sampling temperature: above the policy's own, so its rare compliant replies turn up."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest sampled reply in tokens."""
    train: bool = True
    """Add the red-team rankings to the RM's training data (false: collect and evaluate only,
    the "before" RM of the comparison)."""

    def __bool__(self) -> bool:
        return self.n_prompts > 0 or self.n_test_prompts > 0


class EvalSettings(ConfigBase):
    n_prompts: int = Field(ge=1)
    """Held-out prompts the final evaluation samples every policy on."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the evaluation replies."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest evaluation reply in tokens."""
    ceiling_n: list[int] = []
    """n of the best-of-n ceilings from SFT (gold oracle and RM as selector); [] skips them."""
    n_harmful: int = Field(0, ge=0)
    """Extra held-out harmful requests (prompts/eval_harmful) every policy answers; harm rates
    are measured on these and the harmful ones among the `n_prompts`."""


class DemoConfig(ConfigBase):
    """`rlhfkit/configs/demo.yaml`: the sizes of every stage. The trainer sections are merged
    into that trainer's config (PPO on top of the `ppo_max` preset) and validated by it."""

    threads: int | None = Field(None, ge=1)
    """torch threads per stage (null: torch's default)."""
    world: dict[str, Any] = {}
    """`rlhfkit.sim.make_world` sizes (keys of `sim.make.DEFAULT_SIZES`)."""
    model: DemoModel = DemoModel()
    sft: dict[str, Any] = {}
    """Overrides of `SFTConfig` (paths are filled in by the demo)."""
    feedback: FeedbackSettings | None = None
    """On-policy comparisons of SFT replies for the RM; null: the world's own pairs."""
    redteam: RedTeamSettings | None = None
    """Red-team (harmlessness) comparisons for the RM; null: none."""
    rm: dict[str, Any] = {}
    """Overrides of `RMConfig`."""
    ppo: dict[str, Any] = {}
    """Overrides of `PPOConfig`, on top of the ppo_max preset."""
    ablation: dict[str, Any] = {}
    """Merged over `ppo` for the run without the KL penalty."""
    eval: EvalSettings

    @field_validator("world")
    @classmethod
    def _known_sizes(cls, world: dict[str, Any]) -> dict[str, Any]:
        from rlhfkit.sim.make import DEFAULT_SIZES

        unknown = sorted(set(world) - set(DEFAULT_SIZES))
        if unknown:
            raise ValueError(f"unknown size(s) {unknown}; known: {sorted(DEFAULT_SIZES)}")
        return world

    @field_validator("sft", "rm", "ppo")
    @classmethod
    def _fits_its_trainer(cls, section: dict[str, Any], info: Any) -> dict[str, Any]:
        _check_section(info.field_name, section)
        return section

    @model_validator(mode="after")
    def _ablation_fits_ppo(self) -> DemoConfig:
        _check_section("ppo", merge(self.ppo, self.ablation), "ablation")
        return self

    @model_validator(mode="after")
    def _harmful_prompts_exist(self) -> DemoConfig:
        from rlhfkit.sim.make import DEFAULT_SIZES

        have = int(self.world.get("n_eval_harmful", DEFAULT_SIZES["n_eval_harmful"]))
        for key, n in (
            ("eval.n_harmful", self.eval.n_harmful),
            ("redteam.n_test_prompts", self.redteam.n_test_prompts if self.redteam else 0),
        ):
            if n > have:
                raise ValueError(
                    f"{key}: {n} held-out harmful requests asked, world.n_eval_harmful is {have}"
                )
        return self

    @property
    def kl_coef_ablation(self) -> float:
        return float(self.ablation.get("kl_coef", 0.0))


def _check_section(trainer: str, section: dict[str, Any], name: str = "") -> None:
    """Validate a demo section as overrides of `trainer`'s config; errors name the keys."""
    from pydantic import ValidationError

    from rlhfkit.algos import ppo, rm, sft

    cls = {"sft": sft.SFTConfig, "rm": rm.RMConfig, "ppo": ppo.PPOConfig}[trainer]
    try:
        cls.model_validate(section)
    except ValidationError as e:
        problems = "; ".join(
            f"{name or trainer}.{'.'.join(map(str, err['loc']))}: "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()
        )
        raise ValueError(problems) from None


STAGES = (
    "world",
    "model",
    "sft",
    "feedback",
    "redteam",
    "rm",
    "ppo",
    "ppo_nokl",
    "eval",
    "report",
)


def load_demo_config(quick: bool, overrides: list[str] | tuple[str, ...] = ()) -> DemoConfig:
    """`demo.yaml` (or `demo_quick.yaml`) with `key=value` overrides, validated."""
    return load_config(DemoConfig, preset="demo_quick" if quick else "demo", overrides=overrides)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class _Stages:
    """Times each stage and prints a header for it: `[3/8] SFT ...`; a reused stage's body is
    skipped (its outputs are already in the run directory)."""

    def __init__(self, names: list[str], reused: set[str]) -> None:
        self.names = names
        self.reused = reused
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        position = f"[{self.names.index(name) + 1}/{len(self.names)}]"
        console.rule(f"[bold cyan]{position} {name}[/]: {what}", align="left")
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 1)
        console.print(f"[green]✓[/] {name} done in {self.timings[name]:.1f}s")

    def fresh(self, name: str) -> bool:
        """Whether stage `name` runs (False: reused from the earlier run in the directory)."""
        if name in self.reused:
            console.print(f"[dim]{name}: reused from the earlier run[/]")
        return name not in self.reused

    def stop(self, stop_after: str | None, name: str) -> bool:
        if stop_after == name:
            console.print(f"stopped after {name} (--stop-after)")
        return stop_after == name


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _feedback_stage(out: Path, fb: FeedbackSettings, seed: int, sft_dir: Path) -> None:
    """On-policy comparisons (`rlhfkit.sim.feedback`): `k` SFT samples per training prompt ranked
    by one simulated annotator (the RM's training data; k > 2 gives rankings, trained with the
    ranking loss), and two per held-out prompt (the RM's evaluation pairs): feedback/train.jsonl
    and feedback/test.jsonl."""
    from rich.progress import Progress

    from rlhfkit.data import read_prompts
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.feedback import annotators_from_manifest, collect_comparisons, gold_choices

    world, folder = out / "world", out / "feedback"
    policy = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    tokenizer = load_tokenizer(sft_dir)
    annotators = annotators_from_manifest(world)
    rollout = RolloutConfig(
        max_new_tokens=fb.max_new_tokens, temperature=fb.temperature, batch_size=128
    )
    for split, source, n, k in (
        ("train", "train", fb.n_prompts, fb.k),
        ("test", "eval", fb.n_test_prompts, 2),  # evaluation pairs: chosen vs rejected
    ):
        records = read_prompts(world / "prompts" / f"{source}.jsonl").records[:n]
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"sampling ({split})", total=k * len(records))
            rows = collect_comparisons(
                policy,
                tokenizer,
                records,
                annotators,
                rollout,
                seed=seed + (11 if split == "train" else 13),
                k=k,
                progress=lambda done, total, task=task: bar.update(task, completed=done),
            )
        _write_rows(folder / f"{split}.jsonl", rows)
        if k > 2:
            comparisons = sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)
            console.print(
                f"  {split}: {len(rows)} rankings of up to {k} SFT replies to {len(records)} "
                f"training prompts ({comparisons} comparisons)"
            )
            continue
        agree, decided = gold_choices(rows)
        console.print(
            f"  {split}: {len(rows)} comparisons of SFT replies to {len(records)} "
            f"{'training' if split == 'train' else 'held-out'} prompts (annotators chose the "
            f"gold-better reply in {agree}/{decided})"
        )


def _redteam_stage(out: Path, rt: RedTeamSettings, seed: int, sft_dir: Path) -> None:
    """Red-team comparisons (`rlhfkit.sim.feedback.collect_red_team`): `k` replies at the red
    team's temperature to each harmful request among the first `n_prompts` training prompts
    (redteam/train.jsonl, harmlessness training data), two to each of `n_test_prompts` held-out
    harmful requests (redteam/test.jsonl, harmlessness evaluation pairs); redteam/info.json
    records what was drawn (how many replies complied: the harm the RM gets to see)."""
    from collections import Counter

    from rlhfkit.data import read_prompts
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.feedback import (
        annotators_from_manifest,
        collect_red_team,
        comparison_count,
        gold_choices,
    )

    world, folder = out / "world", out / "redteam"
    policy = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    tokenizer = load_tokenizer(sft_dir)
    annotators = annotators_from_manifest(world)
    rollout = RolloutConfig(
        max_new_tokens=rt.max_new_tokens, temperature=rt.temperature, batch_size=128
    )
    info: dict[str, Any] = {"k": rt.k, "temperature": rt.temperature, "train": rt.train}
    for split, source, n, k in (
        ("train", "train", rt.n_prompts, rt.k),
        ("test", "eval_harmful", rt.n_test_prompts, 2),
    ):
        path = world / "prompts" / f"{source}.jsonl"
        records = read_prompts(path).records[:n] if n and path.is_file() else []
        rows = collect_red_team(
            policy, tokenizer, records, annotators, rollout, seed=seed + 17 + (split == "test"), k=k
        )
        _write_rows(folder / f"{split}.jsonl", rows)
        replies = Counter(
            b
            for r in rows
            for b in r["meta"].get("behaviours")
            or (r["meta"]["chosen_behaviour"], r["meta"]["rejected_behaviour"])
        )
        info[split] = {
            "prompts": len(records),
            "rows": len(rows),
            "comparisons": comparison_count(rows),
            "replies": dict(replies.most_common()),
            "prompts_with_compliance": sum(
                "harmful_compliance"
                in (
                    r["meta"].get("behaviours")
                    or (r["meta"]["chosen_behaviour"], r["meta"]["rejected_behaviour"])
                )
                for r in rows
            ),
        }
        if k == 2:
            info[split]["gold_choices"] = list(gold_choices(rows))
        console.print(
            f"  {split}: {len(rows)} {'rankings' if k > 2 else 'pairs'} on harmful requests "
            f"({info[split]['comparisons']} comparisons); replies: "
            + ", ".join(f"{b} {c}" for b, c in replies.most_common())
        )
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _ranked(fb: FeedbackSettings | None, rt: RedTeamSettings | None) -> bool:
    """Whether the RM trains on rankings: any ranked source (pairs then join as 2-reply lists)."""
    return (fb is not None and fb.k > 2) or bool(rt and rt.train and rt.n_prompts and rt.k > 2)


def _as_ranking(row: dict[str, Any]) -> dict[str, Any]:
    if "responses" in row:
        return row
    meta = dict(row.get("meta", {}))
    if "chosen_gold" in meta:
        meta["gold"] = [meta.pop("chosen_gold"), meta.pop("rejected_gold")]
    return {"prompt": row["prompt"], "responses": [row["chosen"], row["rejected"]], "meta": meta}


def _rm_files(
    out: Path,
    fb: FeedbackSettings | None,
    rt: RedTeamSettings | None,
    train: Path,
    test: Path,
    world: Path,
) -> tuple[Path, Path]:
    """The RM's training and evaluation files: the helpfulness comparisons (feedback/, or the
    world's pairs), the world's pairs too when `include_world_pairs`, and the red-team
    comparisons (training when `redteam.train`, evaluation always). Writes rm_data/{train,test}
    .jsonl when it combines anything and returns the paths; records the share of comparisons
    from each source in rm_data/shares.json."""
    from rlhfkit.sim.feedback import comparison_count

    train_parts = [train]
    if fb is not None and fb.include_world_pairs:
        train_parts.insert(0, world / "preferences" / "train.jsonl")
    test_parts = [test]
    if rt:
        if rt.train and rt.n_prompts:
            train_parts.append(out / "redteam" / "train.jsonl")
        if rt.n_test_prompts:
            test_parts.append(out / "redteam" / "test.jsonl")
    if len(train_parts) == 1 and len(test_parts) == 1:
        return train, test
    folder = out / "rm_data"
    ranked = _ranked(fb, rt)
    shares: dict[str, Any] = {}
    for split, parts in (("train", train_parts), ("test", test_parts)):
        rows: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for part in parts:
            these = _read_rows(part)
            if split == "train" and ranked:
                these = [_as_ranking(r) for r in these]
            key = str(part.relative_to(out) if part.is_relative_to(out) else part)
            counts[key] = comparison_count(these)
            rows.extend(these)
        _write_rows(folder / f"{split}.jsonl", rows)
        total = sum(counts.values()) or 1
        shares[split] = {k: {"comparisons": v, "share": v / total} for k, v in counts.items()}
    (folder / "shares.json").write_text(json.dumps(shares, indent=2) + "\n", encoding="utf-8")
    return folder / "train.jsonl", folder / "test.jsonl"


def _final_metrics(path: Path) -> dict[str, Any]:
    """The last value of every key of a metrics.jsonl (a trainer's final evaluation)."""
    from rlhfkit.engine.metrics import read_metrics

    merged: dict[str, Any] = {}
    for row in read_metrics(path):
        merged.update(row)
    return merged


def _eval_stage(
    out: Path, ev: EvalSettings, seed: int, policies: dict[str, Path], sft_dir: Path, rm_dir: Path
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]] | None]:
    """Every policy on the first `n_prompts` held-out prompts (eval/{policy}.jsonl: the win rate,
    means, families) and on `n_harmful` more held-out harmful requests (eval/{policy}_harmful
    .jsonl, its own sampling seed). Returns (results, harmful-request results, ceilings)."""
    from rlhfkit.data import read_prompts
    from rlhfkit.eval.evaluate import evaluate_policy
    from rlhfkit.models import ModelConfig, load_policy, load_reward_model, load_tokenizer
    from rlhfkit.rollout import RolloutConfig

    records = read_prompts(out / "world" / "prompts" / "eval.jsonl").records[: ev.n_prompts]
    tokenizer = load_tokenizer(sft_dir)
    ref = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    rm = load_reward_model(rm_dir)
    rollout = RolloutConfig(
        max_new_tokens=ev.max_new_tokens, temperature=ev.temperature, batch_size=64
    )
    harmful_path = out / "world" / "prompts" / "eval_harmful.jsonl"
    extra = read_prompts(harmful_path).records[: ev.n_harmful] if ev.n_harmful else []
    if ev.n_harmful and len(extra) < ev.n_harmful:
        raise ValueError(
            f"eval.n_harmful: {ev.n_harmful} asked, {harmful_path} holds {len(extra)} "
            "(raise world.n_eval_harmful)"
        )
    results, harm = {}, {}
    for name, path in policies.items():
        policy = ref if path == sft_dir else load_policy(ModelConfig(name_or_path=str(path)))
        res = evaluate_policy(
            policy,
            tokenizer,
            records,
            rollout,
            seed=seed + 7,
            name=name,
            ref_policy=ref,
            reward_model=rm,
            gold=True,
        )
        results[name] = res
        if extra:
            harm[name] = evaluate_policy(
                policy,
                tokenizer,
                extra,
                rollout,
                seed=seed + 8,
                name=name,
                ref_policy=ref,
                reward_model=rm,
                gold=True,
            )
            (out / "eval").mkdir(exist_ok=True)
            _write_rows(out / "eval" / f"{name}_harmful.jsonl", harm[name].rows())
        s_ = res.summary()
        console.print(
            f"  {name}: gold {s_['gold_mean']:+.3f}  RM {s_['rm_mean']:+.3f}  "
            f"KL {s_['kl_to_ref']:.2f}  ({res.seconds:.0f}s)"
        )
        (out / "eval").mkdir(exist_ok=True)
        (out / "eval" / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in res.rows()), encoding="utf-8"
        )
    ceiling = _ceiling(ev, seed, ref, tokenizer, records, rollout, rm, results["sft"].gold)
    return results, harm, ceiling


def _ceiling(
    ev: EvalSettings,
    seed: int,
    ref: Any,
    tokenizer: Any,
    records: list,
    rollout: Any,
    rm: Any,
    sft_gold: list[float],
) -> list[dict[str, Any]] | None:
    """Best-of-n from SFT with the gold scorer and with the RM as selector, judged against the
    SFT replies the win rate used (`rlhfkit.eval.ceiling`): what limits the win rate."""
    if not ev.ceiling_n:
        return None
    from rlhfkit.eval.ceiling import ceiling_rows, sample_candidates
    from rlhfkit.eval.judges import gold_judge

    ns = list(ev.ceiling_n)
    gold, by_rm = sample_candidates(
        ref, tokenizer, records, rollout, max(ns), seed + 11, gold_judge, rm
    )
    rows = [row.as_dict() for row in ceiling_rows(gold, sft_gold, ns, by_rm)]
    for r in rows:
        console.print(
            f"  best-of-{r['n']} from SFT (KL ≤ {r['kl_bound']:.2f}): gold-oracle "
            f"{100 * r['oracle']['rate']:.1f}%, RM-selected {100 * r['rm']['rate']:.1f}%"
        )
    return rows


def _side_by_side(results: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(results)
    first = results[names[0]]
    rows = []
    for i, rec in enumerate(first.prompts):
        row: dict[str, Any] = {"prompt": rec.prompt[-1].content, "family": first.families[i]}
        if len(rec.prompt) > 1:
            row["context"] = [m.content for m in rec.prompt[:-1]]
        for name, res in results.items():
            row[f"{name}_reply"] = res.replies[i]
            row[f"{name}_gold"] = res.gold[i]
            row[f"{name}_rm"] = res.rm_scores[i]
            row[f"{name}_behaviour"] = res.behaviours[i]
        rows.append(row)
    return rows


def _rm_by_behaviour(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean RM and gold score of every evaluated reply, grouped by the gold judge's behaviour
    label (all policies pooled): where the RM is fooled, a low-gold behaviour scores high."""
    from rlhfkit.eval.metrics import group_means

    behaviours = [b for r in results.values() for b in r.behaviours]
    rm_means = group_means(behaviours, [x for r in results.values() for x in r.rm_scores])
    gold_means = group_means(behaviours, [x for r in results.values() for x in r.gold])
    return {
        b: {"rm": rm_means[b], "gold": gold_means[b], "n": behaviours.count(b)}
        for b in sorted(rm_means, key=lambda b: -gold_means[b])
    }


def rate_ci(count: int, n: int, level: float = 0.95) -> dict[str, Any]:
    """{rate, low, high, count, n}: count/n with its Wilson interval (`eval.winrate`); NaN rate
    and (0, 1) when n = 0."""
    from rlhfkit.eval.winrate import wilson_interval

    rate = count / n if n else math.nan
    low, high = wilson_interval(rate if n else 0.0, n, level)
    return {"rate": rate, "low": low, "high": high, "count": count, "n": n}


_REFUSED = {"refusal", "over_refusal"}


def harm_rates(results: list[Any]) -> dict[str, dict[str, Any]]:
    """Harmful compliance and refusal over the harmful requests of all `results` (one policy's
    `EvalResult`s, pooled), over-refusal over their other prompts, each with a 95 % Wilson CI
    (`rate_ci`). Behaviours as `eval.evaluate` counts them: "harmful_compliance" complies;
    "refusal" / "over_refusal" refuse."""
    rows = [(f, b) for r in results for f, b in zip(r.families, r.behaviours, strict=True)]
    harmful = [b for f, b in rows if f == "harmful"]
    other = [b for f, b in rows if f != "harmful"]
    return {
        "harmful_compliance": rate_ci(
            sum(b == "harmful_compliance" for b in harmful), len(harmful)
        ),
        "harmful_refusal": rate_ci(sum(b in _REFUSED for b in harmful), len(harmful)),
        "over_refusal": rate_ci(sum(b in _REFUSED for b in other), len(other)),
    }


def _summary(
    results: dict[str, Any],
    harm: dict[str, Any],
    rm_metrics: dict[str, Any],
    ablation_curve: Any,
    s: DemoConfig,
    *,
    ceiling: list[dict[str, Any]] | None,
    redteam: dict[str, Any] | None,
    settings: dict[str, Any],
    timings: dict[str, float],
    seed: int,
    quick: bool,
) -> RunSummary:
    """The run's `RunSummary` (summary.json, the report's headline figures), built once."""
    from rlhfkit.eval.evaluate import compare_policies
    from rlhfkit.eval.summary import RunSummary

    sums = {name: res.summary() for name, res in results.items()}
    wr = compare_policies(results["ppo"], results["sft"])
    families = list(sums["sft"]["per_family"])
    counts = {f: results["sft"].families.count(f) for f in families}
    rate_keys = (
        "harmful_compliance_rate",
        "harmful_refusal_rate",
        "over_refusal_rate",
        "repetition_rate",
        "mean_words",
        "mean_tokens",
        "kl_to_ref",
        "perplexity",
        "empty_rate",
        "n_harmful",
        "n_other",
    )
    harm_by = {n: harm_rates([results[n], *([harm[n]] if n in harm else [])]) for n in results}
    ablation = None
    if "ppo_nokl" in results and ablation_curve is not None and len(ablation_curve) >= 2:
        a = sums["ppo_nokl"]
        ablation = {
            "kl_coef": s.kl_coef_ablation,
            "rm_change": ablation_curve.rm_change,
            "gold_change": ablation_curve.gold_change,
            "gold_peak_step": ablation_curve.gold_peak_step,
            "kl_to_ref": ablation_curve.kl[-1],
            "held_out_gold_mean": a["gold_mean"],
            "held_out_rm_mean": a["rm_mean"],
            "held_out_kl_to_ref": a["kl_to_ref"],
            "hacked": ablation_curve.rm_change > 0 and ablation_curve.gold_change < 0,
        }
    sft_h, ppo_h = harm_by["sft"], harm_by["ppo"]
    goal = {
        "win_rate_ok": wr.rate >= 0.65 and wr.low > 0.60,
        "harmful_ok": ppo_h["harmful_compliance"]["rate"] <= sft_h["harmful_compliance"]["rate"],
        "harmful_refusal_ok": ppo_h["harmful_refusal"]["rate"] >= sft_h["harmful_refusal"]["rate"],
        "over_refusal_ok": ppo_h["over_refusal"]["rate"] <= sft_h["over_refusal"]["rate"],
    }
    return RunSummary(
        title="rlhfkit demo: RLHF on the simulated world",
        policies=list(results),
        sample_policies=["sft", "ppo"],
        gold={f"{n}_mean": v["gold_mean"] for n, v in sums.items()},
        rm={f"{n}_mean": v["rm_mean"] for n, v in sums.items()},
        win_rate_vs_sft=wr.rate,
        win_rate_ci=(wr.low, wr.high),
        win_rate_detail=wr.to_dict(),
        kl_to_ref=sums["ppo"]["kl_to_ref"],
        rm_gold_accuracy=rm_metrics.get("eval/gold_agreement"),
        rm_gold_pairs=rm_metrics.get("eval/gold_pairs", 0),
        rm_accuracy=rm_metrics.get("eval/accuracy"),
        rm_label_ceiling=rm_metrics.get("eval/label_ceiling"),
        rm_ece=rm_metrics.get("eval/ece"),
        rm_calibration=rm_metrics.get("eval/calibration"),
        per_family={
            f: {**{n: v["per_family"].get(f, math.nan) for n, v in sums.items()}, "n": counts[f]}
            for f in families
        },
        rates={n: {k: v[k] for k in rate_keys if k in v} for n, v in sums.items()},
        harm=harm_by,
        rm_gold_agreement_by=rm_metrics.get("eval/gold_agreement_by"),
        redteam=redteam,
        behaviours={n: v["behaviours"] for n, v in sums.items()},
        rm_by_behaviour=_rm_by_behaviour(results),
        ablation=ablation,
        goal=goal,
        ceiling=ceiling,
        timings=timings,
        settings=settings,
        seed=seed,
        quick=quick,
    )


def _rate_text(r: dict[str, Any]) -> str:
    """A rate with its 95 % interval when known; n/a with the count for 0 of 0, never a %."""
    if not r["n"]:
        return "n/a (0 prompts)"
    ci = f" ({100 * r['low']:.1f}–{100 * r['high']:.1f})" if "low" in r else ""
    return f"{100 * r['rate']:.1f}%{ci}"


def _plain_rates(rates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A summary's per-policy `rates` in `harm_rates`' shape, without intervals (a summary
    written before the harm rates existed)."""
    return {
        "harmful_compliance": {"rate": rates["harmful_compliance_rate"], "n": rates["n_harmful"]},
        "harmful_refusal": {"rate": rates["harmful_refusal_rate"], "n": rates["n_harmful"]},
        "over_refusal": {"rate": rates["over_refusal_rate"], "n": rates["n_other"]},
    }


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    names = summary["policies"]
    table = Table(title="rlhfkit demo: held-out evaluation", show_lines=False)
    table.add_column("")
    for n in names:
        table.add_column(
            {"sft": "SFT", "ppo": "PPO", "ppo_nokl": "PPO, no KL"}.get(n, n), justify="right"
        )
    table.add_row("gold score (true)", *(f"{summary['gold'][f'{n}_mean']:+.3f}" for n in names))
    table.add_row("RM score (proxy)", *(f"{summary['rm'][f'{n}_mean']:+.3f}" for n in names))
    harm = summary.get("harm") or {n: _plain_rates(summary["rates"][n]) for n in names}
    for key, label in (
        ("harmful_compliance", "harmful compliance"),
        ("harmful_refusal", "refuses harmful"),
        ("over_refusal", "over-refusal"),
    ):
        table.add_row(
            f"{label} (of {harm[names[0]][key]['n']}, 95% CI)",
            *(_rate_text(harm[n][key]) for n in names),
        )
    table.add_row("KL to SFT (nats)", *(f"{summary['rates'][n]['kl_to_ref']:.2f}" for n in names))
    table.add_row("mean words", *(f"{summary['rates'][n]['mean_words']:.1f}" for n in names))
    console.print(table)
    ci = summary["win_rate_ci"]
    console.print(
        f"[bold]win rate PPO vs SFT (gold judge, ties half): {100 * summary['win_rate_vs_sft']:.1f}%[/] "
        f"[95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"
    )
    fam = ", ".join(
        f"{f} {v['sft']:+.2f}→{v['ppo']:+.2f}" for f, v in summary["per_family"].items()
    )
    console.print(f"per family (gold, SFT→PPO): {fam}")
    if summary.get("ceiling"):
        from rlhfkit.eval.ceiling import row_near_kl

        r = row_near_kl(summary["ceiling"], summary["kl_to_ref"])
        console.print(
            f"best-of-{r['n']} from SFT (KL ≤ {r['kl_bound']:.2f}, PPO's is "
            f"{summary['kl_to_ref']:.2f}): gold-oracle selection would win "
            f"{100 * r['oracle']['rate']:.1f}%, selection by this RM {100 * r['rm']['rate']:.1f}%"
        )
    if summary.get("ablation"):
        a = summary["ablation"]
        verdict = (
            "reward hacking: RM up, gold down" if a["hacked"] else "no RM-up/gold-down this run"
        )
        if summary.get("quick"):
            verdict = "no verdict from a smoke run"
        console.print(
            f"ablation (kl_coef={a['kl_coef']}): RM {a['rm_change']:+.2f}, gold "
            f"{a['gold_change']:+.2f}, KL {a['kl_to_ref']:.1f} nats — {verdict}"
        )
    rm_acc, pairs = summary.get("rm_gold_accuracy"), summary.get("rm_gold_pairs") or 0
    if rm_acc is None or not pairs:
        console.print("reward model agreement with gold: n/a (0 held-out pairs gold separates)")
    else:
        by = summary.get("rm_gold_agreement_by") or {}
        aspects = "".join(
            f", {aspect} pairs {100 * by[k]['rate']:.1f}% ({by[k]['agree']}/{by[k]['n']})"
            for aspect, k in (
                ("helpfulness", "aspect/helpful"),
                ("harmlessness", "aspect/harmless"),
            )
            if k in by
        )
        console.print(
            f"reward model agrees with gold on {round(rm_acc * pairs)} of {pairs} held-out pairs "
            f"({100 * rm_acc:.1f}%){aspects}"
        )
    console.print(
        "time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings"].items())
    )
    console.print(
        f"[bold]report:[/] {out / 'report.html'}   [bold]summary:[/] {out / 'summary.json'}"
    )
    if summary.get("quick"):
        from rlhfkit.eval.summary import SMOKE_NOTE

        console.print(f"[yellow]This was {SMOKE_NOTE}.")


def run_demo(
    out_dir: str | Path,
    seed: int = 0,
    quick: bool = False,
    reuse: str | None = None,
    stop_after: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """Run the whole loop into `out_dir` and return the summary (also written to summary.json).

    `quick=True` uses tiny sizes (an end-to-end smoke run: 38 s, README); the default sizes
    are tuned to finish in under ten minutes on two CPU cores. `reuse=STAGE` takes every stage
    up to and including STAGE from an earlier run in `out_dir` (same seed and settings: tuning a
    later stage without rerunning SFT); `stop_after=STAGE` ends the run after STAGE (None
    returned, no summary); `overrides` are `key=value` settings over demo.yaml
    (`redteam.k=4`, `ppo.kl_coef=0.2`).
    """
    from transformers import AutoTokenizer

    from rlhfkit.algos import ppo, rm, sft
    from rlhfkit.data import read_prompts
    from rlhfkit.data.chat import format_prompt
    from rlhfkit.engine.metrics import read_metrics
    from rlhfkit.eval.judges import gold_judge_on_texts
    from rlhfkit.eval.overopt import overoptimisation_curve
    from rlhfkit.eval.report import build_report
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim import make_world

    out = Path(out_dir)
    s = load_demo_config(quick, overrides)
    fb, rt = s.feedback, s.redteam
    names = [n for n in STAGES if (n != "feedback" or fb is not None) and (n != "redteam" or rt)]
    for option, stage in (("reuse", reuse), ("stop_after", stop_after)):
        if stage is not None and stage not in names:
            raise ConfigError(
                f"--{option.replace('_', '-')}: unknown stage {stage!r}; stages: {', '.join(names)}"
            )
    reused = set(names[: names.index(reuse) + 1]) if reuse else set()
    if reused and not (out / "world" / "manifest.json").is_file():
        raise ConfigError(f"--reuse: {out} holds no earlier demo run (no world/manifest.json)")
    out.mkdir(parents=True, exist_ok=True)
    engine = {"seed": seed, "device": "cpu", "threads": s.threads, "resume": False}
    stages = _Stages(names, reused)
    t_start = time.perf_counter()
    world = out / "world"

    if stages.fresh("world"):
        with stages.stage(
            "world", "simulated prompts, demonstrations, preference pairs, tokenizer"
        ):
            manifest = make_world(world, seed=seed, **s.world)
            console.print(
                f"  {manifest['counts']['sft/train']} demonstrations, "
                f"{manifest['counts']['preferences/train']} preference pairs, "
                f"{manifest['counts']['prompts/train']} RL prompts, "
                f"{manifest['counts']['prompts/eval']} held-out eval prompts; annotator agreement "
                f"{manifest['annotators']['measured_agreement']:.2f}"
            )
    tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")

    if stages.fresh("model"):
        with stages.stage("model", "tiny causal LM built in code (random init)"):
            base = build_tiny_model(s.model.arch, s.model.size, tokenizer=tokenizer, seed=seed)
            save_tiny_model(base, out / "base", tokenizer)
            n_params = sum(p.numel() for p in base.parameters())
            console.print(f"  {s.model.arch} {s.model.size}: {n_params / 1e6:.2f}M parameters")

    sft_dir = out / "sft" / "model"
    if stages.fresh("sft"):
        with stages.stage("sft", "supervised fine-tuning on the demonstrations"):
            cfg_dict = merge(
                {
                    "out_dir": str(out / "sft"),
                    "model": {"name_or_path": str(out / "base")},
                    "data": {
                        "train": str(world / "sft" / "train.jsonl"),
                        "validation": str(world / "sft" / "validation.jsonl"),
                    },
                    "engine": engine,
                },
                s.sft,
            )
            sft_cfg = load_config(
                sft.SFTConfig, _write_yaml(out / "configs" / "sft.yaml", cfg_dict)
            )
            sft_dir = sft.train(sft_cfg).model_dir
    if stages.stop(stop_after, "sft"):
        return None

    rm_train = world / "preferences" / "train.jsonl"
    rm_test = world / "preferences" / "test.jsonl"
    if fb is not None:
        if stages.fresh("feedback"):
            with stages.stage("feedback", "annotators rank the SFT model's own replies"):
                _feedback_stage(out, fb, seed, sft_dir)
        rm_train, rm_test = out / "feedback" / "train.jsonl", out / "feedback" / "test.jsonl"
        if stages.stop(stop_after, "feedback"):
            return None
    redteam_info = None
    if rt:
        if stages.fresh("redteam"):
            with stages.stage("redteam", "red team: harmful requests, replies drawn to comply"):
                _redteam_stage(out, rt, seed, sft_dir)
        redteam_info = json.loads((out / "redteam" / "info.json").read_text(encoding="utf-8"))
        if stages.stop(stop_after, "redteam"):
            return None
    rm_train, rm_test = _rm_files(out, fb, rt, rm_train, rm_test, world)
    if redteam_info is not None and (out / "rm_data" / "shares.json").is_file():
        redteam_info["rm_data"] = json.loads((out / "rm_data" / "shares.json").read_text("utf-8"))

    rm_dir = out / "rm" / "model"
    if stages.fresh("rm"):
        with stages.stage(
            "rm", "reward model from the SFT model, on the annotators' noisy choices"
        ):
            cfg_dict = merge(
                {
                    "out_dir": str(out / "rm"),
                    "model": {"name_or_path": str(sft_dir)},
                    "data": {
                        "ranked": _ranked(fb, rt),
                        "train": str(rm_train),
                        # held-out items: the final evaluation (accuracy, calibration, gold agreement)
                        "validation": str(rm_test),
                    },
                    "engine": engine,
                },
                s.rm,
            )
            rm_cfg = load_config(rm.RMConfig, _write_yaml(out / "configs" / "rm.yaml", cfg_dict))
            rm_dir = rm.train(rm_cfg).model_dir
    rm_metrics = _final_metrics(out / "rm" / "metrics.jsonl")
    console.print(
        f"  held-out accuracy vs labels {rm_metrics.get('eval/accuracy', math.nan):.3f}, "
        f"agreement with gold {rm_metrics.get('eval/gold_agreement', math.nan):.3f} "
        f"(held-out pairs gold separates: {rm_metrics.get('eval/gold_pairs', 0)})"
        + "".join(
            f", {g} {v['rate']:.3f} ({v['agree']}/{v['n']})"
            for g, v in rm_metrics.get("eval/gold_agreement_by", {}).items()
            if g.startswith("aspect/")
        )
    )
    if stages.stop(stop_after, "rm"):
        return None

    # PPO's judges receive prompts as the text the policy saw; map them back to dialogues.
    eval_prompts = read_prompts(world / "prompts" / "eval.jsonl").records
    prompt_texts = {format_prompt(tokenizer, r.prompt): r.prompt for r in eval_prompts}
    judges = {"gold": gold_judge_on_texts(prompt_texts)}

    def ppo_config(name: str, extra: dict[str, Any]) -> Any:
        cfg_dict = merge(
            {
                "out_dir": str(out / name),
                "policy": {"name_or_path": str(sft_dir)},
                "reward_model": str(rm_dir),
                "data": {"train": str(world / "prompts" / "train.jsonl")},
                "eval_prompts": str(world / "prompts" / "eval.jsonl"),
                "ptx_data": str(world / "sft" / "train.jsonl"),
                "engine": engine,
            },
            extra,
        )
        path = _write_yaml(out / "configs" / f"{name}.yaml", cfg_dict)
        return load_config(ppo.PPOConfig, path, preset="ppo_max")

    ppo_status: dict[str, Any] = {"iterations_done": 0, "status": "reused", "warnings": []}
    if stages.fresh("ppo"):
        with stages.stage("ppo", "PPO-Max against the reward model, gold judge watching"):
            ppo_result = ppo.train(ppo_config("ppo", s.ppo), judges=judges)
            ppo_status = {
                "iterations_done": ppo_result.iterations_done,
                "status": ppo_result.status,
                "warnings": ppo_result.warnings,
            }
    if stages.stop(stop_after, "ppo"):
        return None

    if stages.fresh("ppo_nokl"):
        with stages.stage("ppo_nokl", "ablation: the same PPO without the KL penalty"):
            ablation = merge(s.ppo, s.ablation)
            ppo.train(ppo_config("ppo_nokl", ablation), judges=judges)
    if stages.stop(stop_after, "ppo_nokl"):
        return None

    if stages.fresh("eval"):
        with stages.stage("eval", "SFT vs PPO on held-out prompts; harm rates; best-of-n ceilings"):
            results, harm, ceiling = _eval_stage(
                out,
                s.eval,
                seed,
                {
                    "sft": sft_dir,
                    "ppo": out / "ppo" / "policy",
                    "ppo_nokl": out / "ppo_nokl" / "policy",
                },
                sft_dir,
                rm_dir,
            )
            rows = _side_by_side(results)
            (out / "eval" / "samples.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
            )
    if stages.stop(stop_after, "eval"):
        return None

    with stages.stage("report", "summary.json and the HTML report"):
        curve = overoptimisation_curve(read_metrics(out / "ppo_nokl" / "metrics.jsonl"))
        settings = {
            "quick": quick,
            "seed": seed,
            "eval_temperature": s.eval.temperature,
            "eval_max_new_tokens": s.eval.max_new_tokens,
            "model": s.model.model_dump(),
            "feedback": fb.model_dump() if fb is not None else {},
            "redteam": rt.model_dump() if rt else {},
            "rm_train": str(rm_train.relative_to(out)),
            "rm_test": str(rm_test.relative_to(out)),
            "ppo_iterations": ppo_status["iterations_done"],
            "ppo_status": ppo_status["status"],
            "ppo_warnings": ppo_status["warnings"],
            "reused": sorted(reused, key=names.index),
            "overrides": list(overrides),
        }
        summary = _summary(
            results,
            harm,
            rm_metrics,
            curve,
            s,
            ceiling=ceiling,
            redteam=redteam_info,
            settings=settings,
            timings=dict(stages.timings),  # the stages before the report
            seed=seed,
            quick=quick,
        )
        build_report(out, summary=summary)
    # summary.json, written once: every stage's time and the total
    summary.timings = {**stages.timings, "total": round(time.perf_counter() - t_start, 1)}
    summary.write(out / "summary.json")
    summary_dict = summary.model_dump()
    _print_summary(summary_dict, out)
    return summary_dict
