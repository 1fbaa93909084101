"""`rlhfkit demo`: the whole RLHF loop on the simulated world, on a CPU, in minutes.

    world → tokenizer + tiny model → SFT → feedback on SFT samples → reward model
          → PPO (PPO-Max preset) → PPO without the KL penalty (the reward-hacking ablation)
          → evaluation → summary.json + report.html

Stages, each in its own folder of the output directory DIR:

    DIR/world/        `rlhfkit.sim.make_world`: SFT demos, preference pairs, prompts, tokenizer
    DIR/base/         the randomly initialised tiny causal LM (`rlhfkit.models.tiny`)
    DIR/sft/          `rlhfkit.algos.sft.train` run (model in sft/model)
    DIR/feedback/     `rlhfkit.sim.feedback`: the world's annotators compare two SFT samples per
                      prompt, as InstructGPT's labellers compared model outputs: train.jsonl
                      (training prompts) and test.jsonl (held-out prompts, for evaluation only)
    DIR/rm/           `rlhfkit.algos.rm.train` run, initialised from the SFT model (rm/model),
                      on feedback/train.jsonl (plus the world's own pairs when
                      `feedback.include_world_pairs`), evaluated on feedback/test.jsonl
    DIR/ppo/          `rlhfkit.algos.ppo.train` with the `ppo_max` preset and the demo's
                      simulated-world overrides; the gold scorer is passed as a judge, so
                      eval/gold is logged next to eval/rm_score and eval/kl_to_ref
    DIR/ppo_nokl/     the same PPO with kl_coef = 0 (and the ablation's overrides)
    DIR/eval/         held-out evaluation: one JSONL per policy and samples.jsonl side by side
    DIR/configs/      the exact YAML each trainer ran with (`rlhfkit sft --config ...` reruns it)
    DIR/summary.json  headline figures (`rlhfkit.eval.summary.RunSummary`); DIR/report.html

summary.json keys (typed in `RunSummary`): gold.{sft,ppo,ppo_nokl}_mean, rm.{...}_mean,
win_rate_vs_sft (PPO vs SFT under the gold judge, ties half) with win_rate_ci (95 % Wilson) and
win_rate_detail, kl_to_ref (PPO vs the SFT reference, nats per reply), rm_gold_accuracy (RM
agreement with the gold preference on held-out pairs whose gold scores differ), rm_accuracy (vs the
noisy labels), rm_calibration, per_family {family: {sft, ppo, ppo_nokl, n}}, rates {policy:
{harmful_compliance_rate, over_refusal_rate, ...}}, behaviours, ablation {kl_coef, rm_change,
gold_change, hacked, ...}, goal {win_rate_ok, harmful_ok, over_refusal_ok}, timings {stage:
seconds}, settings.

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
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from rich.console import Console
from rich.table import Table

from rlhfkit.config import ConfigBase, load_config, merge

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


class EvalSettings(ConfigBase):
    n_prompts: int = Field(ge=1)
    """Held-out prompts the final evaluation samples every policy on."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the evaluation replies."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest evaluation reply in tokens."""
    ceiling_n: list[int] = []
    """n of the best-of-n ceilings from SFT (gold oracle and RM as selector); [] skips them."""


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


def load_demo_config(quick: bool) -> DemoConfig:
    """`demo.yaml` (or `demo_quick.yaml`), validated."""
    return load_config(DemoConfig, preset="demo_quick" if quick else "demo")


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class _Stages:
    """Times each stage and prints a header for it: `[3/8] SFT ...`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.done += 1
        console.rule(f"[bold cyan][{self.done}/{self.total}] {name}[/]: {what}", align="left")
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 1)
        console.print(f"[green]✓[/] {name} done in {self.timings[name]:.1f}s")


def _feedback_stage(
    out: Path, fb: FeedbackSettings, seed: int, sft_dir: Path, world_pairs: Path
) -> tuple[Path, Path]:
    """On-policy comparisons (`rlhfkit.sim.feedback`): `k` SFT samples per training prompt ranked
    by one simulated annotator (the RM's training data, after the world's own pairs when
    `include_world_pairs`; k > 2 gives rankings, trained with the ranking loss), and two per
    held-out prompt (the RM's evaluation pairs).
    Returns (train file, test file)."""
    from rich.progress import Progress

    from rlhfkit.data import read_prompts
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import RolloutConfig
    from rlhfkit.sim.feedback import annotators_from_manifest, collect_comparisons, gold_choices

    world, folder = out / "world", out / "feedback"
    folder.mkdir(exist_ok=True)
    policy = load_policy(ModelConfig(name_or_path=str(sft_dir)))
    tokenizer = load_tokenizer(sft_dir)
    annotators = annotators_from_manifest(world)
    rollout = RolloutConfig(
        max_new_tokens=fb.max_new_tokens, temperature=fb.temperature, batch_size=128
    )
    written = {}
    for split, source, n, k in (
        ("train", "train", fb.n_prompts, fb.k),
        ("test", "eval", fb.n_test_prompts, 2),  # evaluation pairs: chosen vs rejected
    ):
        records = read_prompts(world / "prompts" / f"{source}.jsonl").records[:n]
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"sampling ({split})", total=k * len(records))
            rows = collect_comparisons(
                policy, tokenizer, records, annotators, rollout,
                seed=seed + (11 if split == "train" else 13), k=k,
                progress=lambda done, total, task=task: bar.update(task, completed=done),
            )  # fmt: skip
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = folder / f"{split}.jsonl"
        path.write_text(lines, encoding="utf-8")
        written[split] = path
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
    if not fb.include_world_pairs:
        return written["train"], written["test"]
    combined = folder / "rm_train.jsonl"
    world_rows = world_pairs.read_text(encoding="utf-8")
    if fb.k > 2:  # as 2-reply rankings, best first, so one ranked file holds both
        world_rows = "".join(
            json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
            for r in map(json.loads, world_rows.splitlines())
        )
    combined.write_text(world_rows + written["train"].read_text(encoding="utf-8"), "utf-8")
    return combined, written["test"]


def _eval_stage(
    out: Path, ev: EvalSettings, seed: int, policies: dict[str, Path], sft_dir: Path, rm_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
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
    results = {}
    for name, path in policies.items():
        policy = ref if path == sft_dir else load_policy(ModelConfig(name_or_path=str(path)))
        res = evaluate_policy(
            policy, tokenizer, records, rollout, seed=seed + 7, name=name,
            ref_policy=ref, reward_model=rm, gold=True,
        )  # fmt: skip
        results[name] = res
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
    return results, ceiling


def _ceiling(
    ev: EvalSettings, seed: int, ref: Any, tokenizer: Any, records: list, rollout: Any, rm: Any,
    sft_gold: list[float],
) -> list[dict[str, Any]] | None:  # fmt: skip
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


def _summary(
    results: dict[str, Any], rm_metrics: dict[str, Any], ablation_curve: Any, s: DemoConfig
) -> dict[str, Any]:
    from rlhfkit.eval.evaluate import compare_policies

    sums = {name: res.summary() for name, res in results.items()}
    wr = compare_policies(results["ppo"], results["sft"])
    families = list(sums["sft"]["per_family"])
    counts = {f: results["sft"].families.count(f) for f in families}
    rate_keys = (
        "harmful_compliance_rate", "harmful_refusal_rate", "over_refusal_rate", "repetition_rate",
        "mean_words", "mean_tokens", "kl_to_ref", "perplexity", "empty_rate", "n_harmful", "n_other",
    )  # fmt: skip
    summary: dict[str, Any] = {
        "title": "rlhfkit demo: RLHF on the simulated world",
        "policies": list(results),
        "sample_policies": ["sft", "ppo"],
        "gold": {f"{n}_mean": v["gold_mean"] for n, v in sums.items()},
        "rm": {f"{n}_mean": v["rm_mean"] for n, v in sums.items()},
        "win_rate_vs_sft": wr.rate,
        "win_rate_ci": [wr.low, wr.high],
        "win_rate_detail": wr.to_dict(),
        "kl_to_ref": sums["ppo"]["kl_to_ref"],
        "rm_gold_accuracy": rm_metrics.get("eval/gold_agreement"),
        "rm_gold_pairs": rm_metrics.get("eval/gold_pairs", 0),
        "rm_accuracy": rm_metrics.get("eval/accuracy"),
        "rm_label_ceiling": rm_metrics.get("eval/label_ceiling"),
        "rm_ece": rm_metrics.get("eval/ece"),
        "rm_calibration": rm_metrics.get("eval/calibration"),
        "per_family": {
            f: {**{n: v["per_family"].get(f, math.nan) for n, v in sums.items()}, "n": counts[f]}
            for f in families
        },
        "rates": {n: {k: v[k] for k in rate_keys if k in v} for n, v in sums.items()},
        "behaviours": {n: v["behaviours"] for n, v in sums.items()},
        "rm_by_behaviour": _rm_by_behaviour(results),
    }
    if "ppo_nokl" in results and ablation_curve is not None and len(ablation_curve) >= 2:
        a = sums["ppo_nokl"]
        summary["ablation"] = {
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
    sft_r, ppo_r = summary["rates"]["sft"], summary["rates"]["ppo"]
    summary["goal"] = {
        "win_rate_ok": wr.rate >= 0.70,
        "harmful_ok": ppo_r["harmful_compliance_rate"] <= sft_r["harmful_compliance_rate"],
        "over_refusal_ok": ppo_r["over_refusal_rate"] <= sft_r["over_refusal_rate"],
    }
    return summary


def _rate(rates: dict[str, Any], key: str) -> str:
    """A refusal rate as a percentage, or n/a with the count when its prompts are 0 of 0."""
    n = rates["n_harmful" if key.startswith("harmful") else "n_other"]
    return f"{100 * rates[key]:.1f}%" if n else "n/a (0 prompts)"


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
    for key, label in (
        ("harmful_compliance_rate", "harmful compliance"),
        ("over_refusal_rate", "over-refusal"),
        ("harmful_refusal_rate", "refuses harmful"),
    ):
        table.add_row(label, *(_rate(summary["rates"][n], key) for n in names))
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
    if "ablation" in summary:
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
        console.print(
            f"reward model agrees with gold on {round(rm_acc * pairs)} of {pairs} held-out pairs "
            f"({100 * rm_acc:.1f}%)"
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


def run_demo(out_dir: str | Path, seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Run the whole loop into `out_dir` and return the summary (also written to summary.json).

    `quick=True` uses tiny sizes (an end-to-end smoke run of about a minute); the default sizes
    are tuned to finish in under ten minutes on two CPU cores.
    """
    from transformers import AutoTokenizer

    from rlhfkit.algos import ppo, rm, sft
    from rlhfkit.data import read_prompts
    from rlhfkit.data.chat import format_prompt
    from rlhfkit.engine.metrics import read_metrics
    from rlhfkit.eval.judges import gold_judge_on_texts
    from rlhfkit.eval.overopt import overoptimisation_curve
    from rlhfkit.eval.report import build_report
    from rlhfkit.eval.summary import RunSummary
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim import make_world

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = load_demo_config(quick)
    engine = {"seed": seed, "device": "cpu", "threads": s.threads, "resume": False}
    fb = s.feedback
    stages = _Stages(total=9 if fb is not None else 8)
    t_start = time.perf_counter()
    world = out / "world"

    with stages.stage("world", "simulated prompts, demonstrations, preference pairs, tokenizer"):
        manifest = make_world(world, seed=seed, **s.world)
        console.print(
            f"  {manifest['counts']['sft/train']} demonstrations, "
            f"{manifest['counts']['preferences/train']} preference pairs, "
            f"{manifest['counts']['prompts/train']} RL prompts, "
            f"{manifest['counts']['prompts/eval']} held-out eval prompts; annotator agreement "
            f"{manifest['annotators']['measured_agreement']:.2f}"
        )

    with stages.stage("model", "tiny causal LM built in code (random init)"):
        tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
        base = build_tiny_model(s.model.arch, s.model.size, tokenizer=tokenizer, seed=seed)
        save_tiny_model(base, out / "base", tokenizer)
        n_params = sum(p.numel() for p in base.parameters())
        console.print(f"  {s.model.arch} {s.model.size}: {n_params / 1e6:.2f}M parameters")

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
        sft_cfg = load_config(sft.SFTConfig, _write_yaml(out / "configs" / "sft.yaml", cfg_dict))
        sft_result = sft.train(sft_cfg)

    rm_train = world / "preferences" / "train.jsonl"
    rm_test = world / "preferences" / "test.jsonl"
    if fb is not None:
        with stages.stage("feedback", "annotators rank the SFT model's own replies"):
            rm_train, rm_test = _feedback_stage(out, fb, seed, sft_result.model_dir, rm_train)

    with stages.stage("rm", "reward model from the SFT model, on the annotators' noisy choices"):
        cfg_dict = merge(
            {
                "out_dir": str(out / "rm"),
                "model": {"name_or_path": str(sft_result.model_dir)},
                "data": {
                    "ranked": fb is not None and fb.k > 2,
                    "train": str(rm_train),
                    # held-out items: the final evaluation (accuracy, calibration, gold agreement)
                    "validation": str(rm_test),
                },
                "engine": engine,
            },
            s.rm,
        )
        rm_cfg = load_config(rm.RMConfig, _write_yaml(out / "configs" / "rm.yaml", cfg_dict))
        rm_result = rm.train(rm_cfg)
        m = rm_result.metrics
        console.print(
            f"  held-out accuracy vs labels {m.get('eval/accuracy', math.nan):.3f}, "
            f"agreement with gold {m.get('eval/gold_agreement', math.nan):.3f} "
            f"(held-out pairs gold separates: {m.get('eval/gold_pairs', 0)})"
        )

    # PPO's judges receive prompts as the text the policy saw; map them back to dialogues.
    eval_prompts = read_prompts(world / "prompts" / "eval.jsonl").records
    prompt_texts = {format_prompt(tokenizer, r.prompt): r.prompt for r in eval_prompts}
    judges = {"gold": gold_judge_on_texts(prompt_texts)}

    def ppo_config(name: str, extra: dict[str, Any]) -> Any:
        cfg_dict = merge(
            {
                "out_dir": str(out / name),
                "policy": {"name_or_path": str(sft_result.model_dir)},
                "reward_model": str(rm_result.model_dir),
                "data": {"train": str(world / "prompts" / "train.jsonl")},
                "eval_prompts": str(world / "prompts" / "eval.jsonl"),
                "ptx_data": str(world / "sft" / "train.jsonl"),
                "engine": engine,
            },
            extra,
        )
        path = _write_yaml(out / "configs" / f"{name}.yaml", cfg_dict)
        return load_config(ppo.PPOConfig, path, preset="ppo_max")

    with stages.stage("ppo", "PPO-Max against the reward model, gold judge watching"):
        ppo_result = ppo.train(ppo_config("ppo", s.ppo), judges=judges)

    with stages.stage("ppo_nokl", "ablation: the same PPO without the KL penalty"):
        ablation = merge(s.ppo, s.ablation)
        nokl_result = ppo.train(ppo_config("ppo_nokl", ablation), judges=judges)

    with stages.stage("eval", "SFT vs PPO on held-out prompts; best-of-n ceilings"):
        results, ceiling = _eval_stage(
            out, s.eval, seed,
            {"sft": sft_result.model_dir, "ppo": ppo_result.policy_path,
             "ppo_nokl": nokl_result.policy_path},
            sft_result.model_dir, rm_result.model_dir,
        )  # fmt: skip
        rows = _side_by_side(results)
        (out / "eval" / "samples.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )

    with stages.stage("report", "summary.json and the HTML report"):
        curve = overoptimisation_curve(read_metrics(out / "ppo_nokl" / "metrics.jsonl"))
        summary = _summary(results, rm_result.metrics, curve, s)
        if ceiling is not None:
            summary["ceiling"] = ceiling
        summary["timings"] = dict(stages.timings)
        summary["settings"] = {
            "quick": quick,
            "seed": seed,
            "eval_temperature": s.eval.temperature,
            "eval_max_new_tokens": s.eval.max_new_tokens,
            "model": s.model.model_dump(),
            "feedback": fb.model_dump() if fb is not None else {},
            "rm_train": str(rm_train.relative_to(out)),
            "rm_test": str(rm_test.relative_to(out)),
            "ppo_iterations": ppo_result.iterations_done,
            "ppo_status": ppo_result.status,
            "ppo_warnings": ppo_result.warnings,
        }
        summary["seed"], summary["quick"] = seed, quick
        RunSummary.model_validate(summary).write(out / "summary.json")
        build_report(out)
    summary["timings"] = dict(stages.timings)
    summary["timings"]["total"] = round(time.perf_counter() - t_start, 1)
    typed = RunSummary.model_validate(summary)  # the schema the report reads
    typed.write(out / "summary.json")
    _print_summary(summary, out)
    return typed.model_dump()
