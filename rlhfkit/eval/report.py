"""The run report: one self-contained HTML file built from a run directory's saved files.

`build_report(RUN)` reads only files, so `rlhfkit eval report RUN` rebuilds the report of any
finished (or killed) run:

    RUN/summary.json              headline figures, typed (`eval.summary.RunSummary`); optional
    RUN/<stage>/metrics.jsonl     training curves, one stage per sub-directory (sft, rm, ppo, ...)
    RUN/eval/samples.jsonl        per evaluation prompt: prompt, family, and for each policy P in
                                  `summary.sample_policies` (sft, ppo without a summary):
                                  P_reply, P_gold, P_rm
    summary.rm_calibration        reliability bins: confidence (mean σ(|r_a − r_b|) of the RM's
                                  pick), accuracy (how often the pick is the labelled one), count

Sections: summary table; training curves per stage; proxy (RM) and gold reward against √KL for
every RL stage (Gao et al. 2022), with and without the KL penalty; gold mean per prompt family
before/after; behaviour rates; the reward model's calibration; a table of sample replies.

Implementation details:
1. Plots are drawn with matplotlib's Agg backend (no display needed) into PNG bytes and embedded
   as `data:image/png;base64` URIs, so the file opens in any browser without a server or network.
2. Every string taken from data (prompts, replies, metric names) is HTML-escaped.
3. A section whose inputs are missing says so instead of failing: a report of a half-finished run
   (no summary.json yet, or a summary without an ablation or ceilings) is still useful. A
   summary.json that is there but does not fit `RunSummary` is an error naming its keys.
4. Training curves: for each stage, numeric metric keys are plotted against `step` in namespace
   order (loss/, reward/, eval/, then the rest; `time` and perf/ are left out), at most
   `MAX_CURVES` per stage; noisy curves get a moving average drawn over the raw points. A key
   logged once, or with one value throughout (a count of pairs, `nan/skipped_steps` at 0), is
   no curve: it is a row of the stage's table of one-off figures instead (`_split_keys`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # file output only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from rlhfkit.engine.metrics import read_metrics  # noqa: E402
from rlhfkit.eval.overopt import overoptimisation_curve  # noqa: E402
from rlhfkit.eval.summary import SMOKE_NOTE, RunSummary, read_summary  # noqa: E402

__all__ = ["build_report", "figure_to_data_uri", "read_samples"]

MAX_CURVES = 8
SAMPLE_ROWS = 24
_KEY_ORDER = ("loss/", "reward/", "eval/", "rm/", "policy/", "critic/", "train/")
_SKIP_KEYS = {"step", "time", "epoch"}
_STAGE_TITLES = {
    "sft": "Supervised fine-tuning",
    "rm": "Reward model",
    "ppo": "PPO (PPO-Max preset)",
    "ppo_nokl": "PPO ablation: no KL penalty",
}

_LABELS = {"sft": "SFT", "ppo": "PPO", "ppo_nokl": "PPO, no KL"}


def _label(policy: str) -> str:
    return _LABELS.get(policy, policy)


def figure_to_data_uri(fig: Any) -> str:
    """Render a matplotlib figure as a `data:image/png;base64,...` URI and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a samples JSONL file; a torn last line (killed run) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return _esc(value)


def _pct(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{100 * value:.1f}%"
    return "–"


def _share(rate: float | None, n: int | None) -> str:
    """A rate with its count: "62.5% (5 of 8)"; "n/a (0 pairs)" for an empty one, never 0 %."""
    if n is None:
        return _pct(rate)
    if n == 0 or rate is None:
        return "n/a (0 pairs)"
    return f"{_pct(rate)} ({round(rate * n)} of {n})"


def _number(value: float) -> str:
    """A logged figure: whole numbers as integers, others to 4 significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _rate_ci(r: Any) -> str:
    """ "5.2% (3.1–8.4)": a `RateCI` with its 95 % interval, and the count."""
    return f"{_pct(r.rate)} <small>({_pct(r.low)}–{_pct(r.high)}; {r.count})</small>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _missing(what: str) -> str:
    return f'<p class="missing">Not available: {_esc(what)}.</p>'


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _split_keys(rows: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, tuple[Any, str]]]:
    """(curve keys, one-off figures) of a stage's metrics: a key with at least two logged points
    and two distinct values is a curve; any other numeric key maps to (its last value, a note:
    "step N" for a single point, "constant over N logs" otherwise)."""
    curves, once = [], {}
    for key in _numeric_keys(rows):
        points = [
            (r["step"], r[key])
            for r in rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r
        ]
        if len(points) >= 2 and len({v for _, v in points}) >= 2:
            curves.append(key)
        elif points:
            note = (
                f"step {points[0][0]}" if len(points) == 1 else f"constant over {len(points)} logs"
            )
            once[key] = (points[-1][1], note)
    return curves, once


def _numeric_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}  # insertion-ordered set; one point is enough (a very short run)
    for row in rows:
        for key, value in row.items():
            if key in _SKIP_KEYS or key.startswith("perf/") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                keys[key] = None

    def rank(key: str) -> tuple[int, str]:
        for i, prefix in enumerate(_KEY_ORDER):
            if key.startswith(prefix):
                return i, key
        return len(_KEY_ORDER), key

    return sorted(keys, key=rank)


def _moving_average(values: list[float], width: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def _curves_figure(rows: Sequence[dict[str, Any]], keys: list[str]) -> str:
    cols = 4 if len(keys) > 4 else len(keys)
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.5 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [
            (r["step"], float(r[key]))
            for r in rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r
        ]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if len(pts) > 30:
            ax.plot(xs, ys, color="#9bb8d8", lw=0.8)
            ax.plot(xs, _moving_average(ys, max(3, len(ys) // 20)), color="#1f5fa8", lw=1.6)
        else:
            ax.plot(xs, ys, color="#1f5fa8", lw=1.6, marker="o", ms=3)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _overopt_figure(curves: dict[str, Any]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {"ppo": "-", "ppo_nokl": "--"}
    for name, curve in curves.items():
        label = {"ppo": "with KL penalty", "ppo_nokl": "no KL penalty"}.get(name, name)
        style = styles.get(name, ":")
        rm0, gold0 = curve.rm[0], curve.gold[0]
        axes[0].plot(
            curve.sqrt_kl,
            [r - rm0 for r in curve.rm],
            style,
            color="#c0392b",
            marker="o",
            ms=3,
            label=f"RM (proxy), {label}",
        )
        axes[0].plot(
            curve.sqrt_kl,
            [g - gold0 for g in curve.gold],
            style,
            color="#1e8449",
            marker="s",
            ms=3,
            label=f"gold, {label}",
        )
        axes[1].plot(curve.step, curve.kl, style, color="#555", marker="o", ms=3, label=label)
    axes[0].axhline(0, color="#999", lw=0.8)
    axes[0].set_xlabel("√KL(π ‖ π_ref)  (√nats)")
    axes[0].set_ylabel("score change from the SFT policy")
    axes[0].set_title("Proxy vs gold reward against √KL (Gao et al. 2022)", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("PPO iteration")
    axes[1].set_ylabel("KL to reference (nats / reply)")
    axes[1].set_title("KL to the SFT policy", fontsize=10)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _family_figure(per_family: dict[str, dict[str, float]], policies: list[str]) -> str:
    families = list(per_family)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(families)), 3.4))
    width = 0.8 / max(1, len(policies))
    colours = ["#95a5a6", "#2e86c1", "#e67e22", "#8e44ad"]
    for i, policy in enumerate(policies):
        values = [per_family[f][policy] for f in families]
        xs = [j + (i - (len(policies) - 1) / 2) * width for j in range(len(families))]
        ax.bar(xs, values, width, label=_label(policy), color=colours[i % len(colours)])
    ax.set_xticks(range(len(families)), families, fontsize=8)
    ax.axhline(0, color="#333", lw=0.8)
    ax.set_ylabel("mean gold score")
    ax.set_title("Gold score per prompt family, before and after RLHF", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _calibration_figure(bins: list[dict[str, float]]) -> str:
    fig, ax = plt.subplots(figsize=(4.4, 3.9))
    ax.plot([0.5, 1], [0.5, 1], ":", color="#999", label="perfect calibration")
    conf = [b["confidence"] for b in bins]
    acc = [b["accuracy"] for b in bins]
    counts = [b["count"] for b in bins]
    biggest = max(counts)
    ax.plot(conf, acc, color="#c0392b", lw=1.4)
    ax.scatter(conf, acc, s=[20 + 120 * n / biggest for n in counts], color="#c0392b", zorder=3,
               label="RM (marker area: pairs in bin)")  # fmt: skip
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(min(0.0, min(acc) - 0.05), 1.0)
    ax.set_xlabel("RM confidence in its pick, σ(|r_a − r_b|)")
    ax.set_ylabel("fraction where its pick is the label")
    ax.set_title("Reward model calibration (held-out pairs)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_data_uri(fig)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _summary_section(s: RunSummary | None, policies: list[str]) -> str:
    head = "<h2>Summary</h2>"
    if s is None:
        return head + _missing("summary.json (the run has not finished its evaluation)")
    rows: list[tuple[str, ...]] = []
    th = "".join(f"<th>{_esc(_label(p))}</th>" for p in policies)
    rows.append(
        ("Gold score, mean (true preference)", *(_fmt(s.gold[f"{p}_mean"]) for p in policies))
    )
    rows.append(("Reward-model score, mean (proxy)", *(_fmt(s.rm[f"{p}_mean"]) for p in policies)))
    harm_rows = (
        ("harmful_compliance", "harmful_compliance_rate", "Harmful compliance (bad)"),
        ("harmful_refusal", "harmful_refusal_rate", "Refusal of harmful requests (good)"),
        ("over_refusal", "over_refusal_rate", "Over-refusal of harmless requests (bad)"),
    )
    for key, rate_key, label in harm_rows:
        if s.harm is not None:
            n = s.harm[policies[0]][key].n
            rows.append(
                (f"{label}, of {n}", *(_rate_ci(s.harm[p][key]) for p in policies))
            )  # fmt: skip
        else:
            rows.append((label, *(_pct(getattr(s.rates[p], rate_key)) for p in policies)))
    rows.append(
        (
            "Repetition rate (repeated word 3-grams)",
            *(_pct(s.rates[p].repetition_rate) for p in policies),
        )
    )
    rows.append(("Mean reply length (words)", *(_fmt(s.rates[p].mean_words, 1) for p in policies)))
    rows.append(("KL to SFT (nats / reply)", *(_fmt(s.rates[p].kl_to_ref) for p in policies)))
    rows.append(("Perplexity of own replies", *(_fmt(s.rates[p].perplexity, 2) for p in policies)))
    body = "".join(
        "<tr><th class='row'>"
        + _esc(r[0])
        + "</th>"
        + "".join(f"<td>{c}</td>" for c in r[1:])
        + "</tr>"
        for r in rows
    )
    table = f"<table class='summary'><tr><th></th>{th}</tr>{body}</table>"

    d = s.win_rate_detail
    wr_text = (
        f"<b>{_pct(s.win_rate_vs_sft)}</b> (95% Wilson CI {_pct(s.win_rate_ci[0])} – "
        f"{_pct(s.win_rate_ci[1])}; {d.wins} wins, {d.ties} ties, {d.losses} losses over {d.n} "
        "held-out prompts)"
    )
    facts = [
        ("Win rate of PPO vs SFT under the gold judge (ties half)", wr_text),
        ("KL of the PPO policy to the SFT reference", _fmt(s.kl_to_ref) + " nats / reply"),
        (
            "Reward model agreement with gold on held-out pairs",
            _share(s.rm_gold_accuracy, s.rm_gold_pairs),
        ),
    ]
    by = s.rm_gold_agreement_by or {}
    if by:
        facts.append(
            (
                "… on helpfulness / harmlessness pairs",
                " / ".join(
                    f"{_pct(by[k].rate)} ({by[k].agree} of {by[k].n})" if k in by else "–"
                    for k in ("aspect/helpful", "aspect/harmless")
                ),
            )
        )
    if s.redteam is not None:
        facts.append(("Red-team (harmlessness) data", _redteam_text(s.redteam)))
    abl = s.ablation
    if abl is not None:
        facts.append(
            (
                f"Ablation (kl_coef = {_fmt(abl.kl_coef)}): change over training",
                f"RM {_fmt(abl.rm_change, 2)}, gold {_fmt(abl.gold_change, 2)}, "
                f"final KL {_fmt(abl.kl_to_ref, 1)} nats"
                + (
                    " — <b>reward hacking: the RM score rose while the gold score fell</b>"
                    if abl.hacked
                    else ""
                ),
            )
        )
    if s.timings:
        reused = s.settings.reused
        facts.append(
            (
                "Time per stage (s)",
                ", ".join(f"{_esc(k)} {v:.0f}" for k, v in s.timings.items())
                + (f" (taken from an earlier run: {_esc(', '.join(reused))})" if reused else ""),
            )
        )
    fact_rows = "".join(f"<tr><th class='row'>{_esc(k)}</th><td>{v}</td></tr>" for k, v in facts)
    return (
        head + "<p>Scores on held-out evaluation prompts. The gold score is the simulated world's "
        "true preference (never seen in training); the reward-model score is what PPO optimised."
        f"</p>{table}<table class='facts'>{fact_rows}</table>"
    )


def _redteam_text(info: dict[str, Any]) -> str:
    train, test = info.get("train", {}), info.get("test", {})
    share = next(
        (
            v["share"]
            for k, v in info.get("rm_data", {}).get("train", {}).items()
            if k.startswith("redteam")
        ),
        None,
    )
    return (
        f"{train.get('rows', 0)} rankings of up to {info.get('k')} replies (temperature "
        f"{info.get('temperature')}) to harmful training requests, "
        f"{train.get('prompts_with_compliance', 0)} holding a compliant reply; "
        + (f"{_pct(share)} of the RM's training comparisons; " if share is not None else "")
        + ("" if info.get("train", True) else "not trained on (evaluation only); ")
        + f"{test.get('rows', 0)} held-out harmlessness pairs"
    )


def _rm_aspect_section(summary: RunSummary | None) -> str:
    """The RM's held-out agreement with gold per aspect, source and family."""
    if summary is None or not summary.rm_gold_agreement_by:
        return ""
    by = summary.rm_gold_agreement_by
    order = ("aspect/", "source/", "family/")
    keys = sorted(by, key=lambda k: (next(i for i, p in enumerate(order) if k.startswith(p)), k))
    body = "".join(
        f"<tr><th class='row'>{_esc(k.split('/', 1)[0])}</th><td>{_esc(k.split('/', 1)[1])}</td>"
        f"<td>{_pct(by[k].rate)}</td><td>{by[k].agree}</td><td>{by[k].n}</td></tr>"
        for k in keys
    )
    return (
        "<h2>Reward model: agreement with gold by aspect</h2><p>Held-out pairs whose gold "
        "scores differ, split as Anthropic split its preference data (Bai et al. 2022): "
        "<b>harmlessness</b> pairs answer harmful requests (from red-teaming and from the "
        "on-policy comparisons), <b>helpfulness</b> pairs everything else. A pooled figure hides an "
        "RM that ranks helpful replies well and harmful ones badly; PPO exploits the latter.</p>"
        "<table class='summary'><tr><th>split by</th><th>group</th><th>agreement</th>"
        f"<th>agree</th><th>pairs</th></tr>{body}</table>"
    )


def _stages(run: Path) -> dict[str, Path]:
    """Every RUN/<stage>/metrics.jsonl: pipeline order first (sft, rm, ppo, ablation), then
    anything else alphabetically."""
    found = {p.parent.name: p.parent for p in sorted(run.glob("*/metrics.jsonl"))}
    order = list(_STAGE_TITLES)
    return dict(
        sorted(
            found.items(),
            key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]),
        )
    )


def _curves_section(stages: dict[str, Path]) -> str:
    parts = ["<h2>Training curves</h2>"]
    if not stages:
        return parts[0] + _missing("no stage metrics.jsonl under the run directory")
    for name, path in stages.items():
        rows = read_metrics(path / "metrics.jsonl")
        curves, once = _split_keys(rows)
        keys, left = curves[:MAX_CURVES], curves[MAX_CURVES:]
        title = _STAGE_TITLES.get(name, name)
        parts.append(f"<h3>{_esc(title)}</h3>")
        if not keys and not once:
            parts.append(_missing(f"numeric metrics in {path.name}/metrics.jsonl"))
            continue
        if keys:
            parts.append(_img(_curves_figure(rows, keys), title))
        if left:
            parts.append(
                "<p class='meta'>Also logged, not drawn: "
                + ", ".join(f"<code>{_esc(k)}</code>" for k in left)
                + "</p>"
            )
        if once:
            body = "".join(
                f"<tr><th class='row'><code>{_esc(k)}</code></th><td>{_number(v)}</td>"
                f"<td>{_esc(note)}</td></tr>"
                for k, (v, note) in once.items()
            )
            parts.append(
                "<table class='facts'><tr><th>one-off figure</th><th>value</th><th>logged</th>"
                f"</tr>{body}</table>"
            )
    return "".join(parts)


def _overopt_section(stages: dict[str, Path]) -> str:
    curves = {}
    for name, path in stages.items():
        curve = overoptimisation_curve(read_metrics(path / "metrics.jsonl"))
        if len(curve) >= 2:
            curves[name] = curve
    head = (
        "<h2>Over-optimisation: proxy reward vs gold reward</h2>"
        "<p>Every few PPO iterations the policy's samples are scored by the reward model (the "
        "proxy PPO maximises) and by the gold judge. While the two rise together RLHF is working; "
        "where the RM score keeps rising but the gold score falls, the policy has found replies "
        "the reward model over-rates (reward hacking). The KL penalty keeps the policy close to the "
        "SFT model (small √KL) and so within the region where the RM is right.</p>"
    )
    if not curves:
        return head + _missing("no RL stage logged eval/kl_to_ref, eval/rm_score and eval/gold")
    return head + _img(_overopt_figure(curves), "proxy and gold reward against sqrt KL")


def _family_section(summary: RunSummary | None, policies: list[str]) -> str:
    head = "<h2>Per-family gold score, before and after</h2>"
    if summary is None or not summary.per_family:
        return head + _missing("summary.json with per-family scores")
    per_family = summary.per_family
    rows = "".join(
        f"<tr><th class='row'>{_esc(f)}</th>"
        + "".join(f"<td>{_fmt(scores[p], 2)}</td>" for p in policies)
        + f"<td>{_fmt(int(scores['n']))}</td></tr>"
        for f, scores in per_family.items()
    )
    table = (
        "<table class='summary'><tr><th>family</th>"
        + "".join(f"<th>{_esc(_label(p))}</th>" for p in policies)
        + f"<th>prompts</th></tr>{rows}</table>"
    )
    return head + _img(_family_figure(per_family, policies), "gold score per family") + table


def _ceiling_section(summary: RunSummary | None) -> str:
    """Best-of-n from SFT with the gold scorer and with the RM as the selector, beside PPO."""
    if summary is None or not summary.ceiling:
        return ""  # runs without a gold scorer (real data) have no ceiling to show
    head = (
        "<h2>What limits the win rate: best-of-n ceilings</h2>"
        "<p>For each held-out prompt, n replies sampled from the SFT model; the one kept is the "
        "best by the <b>gold judge</b> (an oracle: what the world allows) or the best by the "
        "<b>reward model</b> (what the RM allows by selection alone), judged against the same "
        "SFT replies as PPO's win rate. Best-of-n stays within log n − (n−1)/n nats of SFT; the "
        "row nearest PPO's KL is an upper reference for PPO at its leash. Oracle close to PPO: "
        "the world or the model is the limit. Oracle far above PPO: the oracle knows, for each "
        "test prompt, which sample is right, and a policy has to learn that; PPO trained "
        "against the gold judge itself (<code>benchmarks/demo_gold_reward.py</code>) tells "
        "whether the reward model or the policy is what stops it.</p>"
    )
    body = "".join(
        f"<tr><th class='row'>best-of-{r.n}</th><td>{_fmt(r.kl_bound, 2)}</td>"
        f"<td>{_pct(r.oracle.rate)} ({_pct(r.oracle.low)}–{_pct(r.oracle.high)})</td>"
        f"<td>{_pct(r.rm.rate if r.rm is not None else None)}</td></tr>"
        for r in summary.ceiling
    )
    ci = summary.win_rate_ci
    ppo = (
        f"<tr><th class='row'>PPO (the trained policy)</th>"
        f"<td>{_fmt(summary.kl_to_ref, 2)} (measured)</td>"
        f"<td colspan='2'>{_pct(summary.win_rate_vs_sft)} ({_pct(ci[0])}–{_pct(ci[1])})"
        "</td></tr>"
    )
    table = (
        "<table class='summary'><tr><th></th><th>KL to SFT (nats, bound)</th>"
        "<th>win rate, gold-oracle selection (95 % CI)</th><th>win rate, RM selection</th></tr>"
        f"{body}{ppo}</table>"
    )
    return head + table


def _behaviour_section(summary: RunSummary | None, policies: list[str]) -> str:
    if summary is None or not summary.behaviours:
        return ""
    counts = summary.behaviours
    by_behaviour = summary.rm_by_behaviour
    names = sorted({b for p in policies for b in counts[p]})
    totals = {p: sum(counts[p].values()) or 1 for p in policies}
    rows = "".join(
        f"<tr><th class='row'>{_esc(b)}</th>"
        + "".join(f"<td>{_pct(counts[p].get(b, 0) / totals[p])}</td>" for p in policies)
        + (
            f"<td>{_fmt(by_behaviour[b].rm, 2)}</td><td>{_fmt(by_behaviour[b].gold, 2)}</td>"
            if b in by_behaviour
            else ("<td>–</td><td>–</td>" if by_behaviour else "")
        )
        + "</tr>"
        for b in names
    )
    extra_head = "<th>mean RM score</th><th>mean gold score</th>" if by_behaviour else ""
    text = (
        "<p>Share of held-out replies per behaviour (a good reply with a style fault is counted "
        "under the fault)."
        + (
            " The last two columns average over every evaluated reply with that behaviour: where "
            "the reward model scores a behaviour the gold judge rates low about as high as a good "
            "one, PPO is rewarded for it (the RM is fooled).</p>"
            if by_behaviour
            else "</p>"
        )
    )
    return (
        "<h2>Behaviours the gold judge detected</h2>" + text + "<table class='summary'>"
        "<tr><th>behaviour</th>"
        + "".join(f"<th>{_esc(_label(p))}</th>" for p in policies)
        + f"{extra_head}</tr>{rows}</table>"
    )


def _calibration_section(summary: RunSummary | None) -> str:
    head = "<h2>Reward model calibration</h2>"
    if summary is None or not summary.rm_calibration:
        return head + _missing("summary.json with the reward model's calibration bins")
    bins = [b.model_dump() for b in summary.rm_calibration]
    text = (
        "<p>Held-out preference pairs binned by the RM's confidence in the reply it scores "
        "higher, σ(|r_a − r_b|) (its Bradley–Terry probability), against how often that reply "
        "is the one the annotator chose. Points on the diagonal: well calibrated; below it: "
        "over-confident. The labels come from noisy simulated annotators, so even a perfect "
        "model of the gold preference cannot reach 100 %.</p>"
    )
    return head + text + _img(_calibration_figure(bins), "reward model calibration")


def _samples_section(run: Path, policies: list[str]) -> str:
    """The sample table; `policies` are the columns (first = before, last = after)."""
    head = "<h2>Sample replies</h2>"
    path = run / "eval" / "samples.jsonl"
    if not path.is_file():
        return head + _missing("eval/samples.jsonl")
    rows = read_samples(path)
    # Show the prompts where the policies differ most first: the interesting ones.
    a, b = policies[0], policies[-1]

    def delta(r: dict[str, Any]) -> float:
        try:
            return abs(float(r.get(f"{b}_gold", 0)) - float(r.get(f"{a}_gold", 0)))
        except (TypeError, ValueError):
            return 0.0

    chosen = sorted(rows, key=delta, reverse=True)[: SAMPLE_ROWS // 2]
    chosen += [r for r in rows if r not in chosen][: SAMPLE_ROWS - len(chosen)]
    header = (
        "<tr><th>family</th><th>prompt</th>"
        + "".join(f"<th>{_esc(_label(p))} reply</th><th>gold</th><th>RM</th>" for p in policies)
        + "</tr>"
    )
    body = []
    for r in chosen:
        cells = [
            f"<td>{_esc(r.get('family', ''))}</td>",
            f"<td class='text'>{_esc(r.get('prompt', ''))}</td>",
        ]
        for p in policies:
            g = r.get(f"{p}_gold")
            cls = "good" if isinstance(g, (int, float)) and g > 0 else "bad"
            cells.append(f"<td class='text'>{_esc(r.get(f'{p}_reply', ''))}</td>")
            cells.append(f"<td class='{cls}'>{_fmt(g, 2)}</td><td>{_fmt(r.get(f'{p}_rm'), 2)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (
        f"<p>{len(chosen)} of {len(rows)} held-out prompts: first those where the gold score "
        f"changed most between {_esc(_label(a))} and {_esc(_label(b))}, then others.</p>"
    )
    return head + note + "<table class='samples'>" + header + "".join(body) + "</table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:13px}img{max-width:100%;display:block;margin:10px 0}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f6f8}th.row{text-align:left;font-weight:normal;background:#fafafa}
table.facts td{text-align:left}table.samples{font-size:12.5px}
td.text{text-align:left;max-width:260px}td.good{color:#1e8449}td.bad{color:#c0392b}
.missing{color:#a04000;font-style:italic}
"""


def build_report(
    run_dir: str | Path, out: str | Path | None = None, *, summary: RunSummary | None = None
) -> Path:
    """Write the self-contained HTML report of a run directory; return its path.

    Reads RUN/summary.json (optional; `summary`, the run's summary when the caller holds it,
    in its place), RUN/<stage>/metrics.jsonl and RUN/eval/samples.jsonl (see the module
    docstring); writes `out` (default RUN/report.html). Raises FileNotFoundError if `run_dir`
    is not a directory, ValueError if summary.json is not JSON or not a `RunSummary`.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory")
    summary_path = run / "summary.json"
    if summary is None and summary_path.is_file():
        summary = read_summary(summary_path)
    policies = summary.policies if summary is not None else ["sft", "ppo"]
    samples = summary.sample_policies if summary is not None else policies[:2]
    stages = _stages(run)
    title = summary.title if summary is not None else f"rlhfkit run report: {run.name}"
    meta = f"seed {summary.seed}, quick {summary.quick}" if summary is not None else ""
    if summary is not None and summary.quick:
        meta += f" — {_esc(SMOKE_NOTE)}"
    sections = [
        f"<h1>{_esc(title)}</h1><p class='meta'>{meta}</p>",
        _summary_section(summary, policies),
        _family_section(summary, policies),
        _behaviour_section(summary, policies),
        _ceiling_section(summary),
        _rm_aspect_section(summary),
        _overopt_section(stages),
        _curves_section(stages),
        _calibration_section(summary),
        _samples_section(run, samples),
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    target = Path(out) if out is not None else run / "report.html"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)  # a reader never sees a half-written report
    return target
