"""Agreement between annotators, and with gold items.

Every judgment is turned into *comparison labels*: one per unordered pair of candidates (i, j),
whose value is the winning candidate index or "tie". A pairwise judgment gives one label, a
ranking of K replies K(K−1)/2 (InstructGPT's view of a ranking, Ouyang et al. 2022 §3.5), so
the same statistics cover both task kinds. A unit is (item id, i, j).

- Pairwise agreement: over units labelled by two or more annotators and every pair of them, the
  fraction of pairs that gave the same value (InstructGPT reports 72.6 ± 1.5 % among labellers).
- Cohen's κ (Cohen 1960) for two annotators on the units both labelled:
  κ = (p_o − p_e) / (1 − p_e), p_e = Σ_c p_a(c)·p_b(c) from each annotator's own marginals.
- Krippendorff's α, nominal (Krippendorff 2011, "Computing Krippendorff's alpha-reliability",
  §C): coincidences o_ck = Σ_u Σ_{i≠j in u} [v_i = c][v_j = k] / (m_u − 1) over units with
  m_u ≥ 2 values; α = 1 − D_o / D_e with D_o = Σ_{c≠k} o_ck / n and
  D_e = Σ_{c≠k} n_c·n_k / (n(n − 1)). Any number of annotators, missing labels allowed.
- Krippendorff's α, ordinal (same paper, §E): the same coincidences, with the squared ordinal
  distance δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)² (c ≤ k, g over the ordered values) in
  place of [c ≠ k]: D_o = Σ_ck o_ck·δ²_ck / n, D_e = Σ_ck n_c·n_k·δ²_ck / (n(n − 1)). Used for
  Likert ratings, where 4 against 5 is a smaller disagreement than 1 against 5.
- Fleiss' κ (Fleiss 1971), for thumbs: per unit with n_u ≥ 2 ratings,
  P_u = Σ_c n_uc(n_uc − 1) / (n_u(n_u − 1)); P̄ = mean P_u; p_c = Σ_u n_uc / Σ_u n_u;
  P_e = Σ_c p_c²; κ = (P̄ − P_e) / (1 − P_e). With the same number of raters per unit this is
  Fleiss' formula; with fewer on some units, each unit still weighs the same.
- Gold agreement: the fraction of an annotator's non-tie labels on gold items that name the
  candidate the gold order puts first (ratings: that equal the gold score).

Ratings give one label per (item id, aspect): the score.
Undefined statistics (no overlap, or no variation to correct for) are None, never a guess.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

Unit = tuple[int, int, int] | tuple[int, str]  # (item, candidate i < j) or (item, aspect)
Value = int | str  # the winning candidate index, "tie", or a rating's score


def comparison_labels(
    item_id: int, choice: int | None, ranking: Sequence[int] | None, n_candidates: int
) -> dict[Unit, Value]:
    """The comparison labels of one judgment (see the module docstring)."""
    if ranking is not None:
        place = {c: r for r, c in enumerate(ranking)}
        return {
            (item_id, i, j): (i if place[i] < place[j] else j)
            for i, j in combinations(range(n_candidates), 2)
        }
    return {(item_id, 0, 1): "tie" if choice is None else choice}


def gold_labels(item_id: int, gold: Sequence[int], n_candidates: int) -> dict[Unit, Value]:
    """The comparison labels a gold best-first order implies. It may name only the best few:
    a named candidate beats every unnamed one, and two unnamed ones are not compared."""
    place = {c: r for r, c in enumerate(gold)}
    out: dict[Unit, Value] = {}
    for i, j in combinations(range(n_candidates), 2):
        if i in place or j in place:
            out[(item_id, i, j)] = (
                i if place.get(i, n_candidates) < place.get(j, n_candidates) else j
            )
    return out


def pairwise_agreement(labels: Mapping[str, Mapping[Unit, Value]]) -> tuple[float | None, int]:
    """(fraction of same values over annotator pairs on shared units, number of such pairs)."""
    agree = total = 0
    for a, b in combinations(sorted(labels), 2):
        shared = labels[a].keys() & labels[b].keys()
        agree += sum(labels[a][u] == labels[b][u] for u in shared)
        total += len(shared)
    return (agree / total if total else None), total


def cohen_kappa(a: Mapping[Unit, Value], b: Mapping[Unit, Value]) -> float | None:
    """Cohen's κ of two annotators on the units both labelled (None if undefined)."""
    shared = sorted(a.keys() & b.keys())
    n = len(shared)
    if n == 0:
        return None
    p_o = sum(a[u] == b[u] for u in shared) / n
    count_a = Counter(str(a[u]) for u in shared)
    count_b = Counter(str(b[u]) for u in shared)
    p_e = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def rating_labels(item_id: int, scores: Mapping[str, int]) -> dict[Unit, Value]:
    """The labels of one rating judgment: its score per aspect."""
    return {(item_id, aspect): score for aspect, score in scores.items()}


def krippendorff_alpha(units: Iterable[Sequence[Value]], metric: str = "nominal") -> float | None:
    """Krippendorff's α from the values each unit received (None if undefined); `metric` is
    "nominal" (any values) or "ordinal" (numbers, see the module docstring)."""
    key = str if metric == "nominal" else float
    coincidence: dict[tuple[Any, Any], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(key(values[i]), key(values[j]))] += 1.0 / (m - 1)
    n_c: dict[Any, float] = defaultdict(float)
    for (c, _), o in coincidence.items():
        n_c[c] += o
    n = sum(n_c.values())
    if n <= 1:
        return None
    delta = _ordinal_distance(n_c) if metric == "ordinal" else (lambda c, k: float(c != k))
    d_o = sum(o * delta(c, k) for (c, k), o in coincidence.items()) / n
    d_e = sum(n_c[c] * n_c[k] * delta(c, k) for c in n_c for k in n_c) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


def _ordinal_distance(n_c: Mapping[float, float]) -> Any:
    """δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)² over the ordered values g."""
    ordered = sorted(n_c)

    def delta(c: float, k: float) -> float:
        lo, hi = min(c, k), max(c, k)
        between = sum(n_c[g] for g in ordered if lo <= g <= hi)
        return (between - (n_c[lo] + n_c[hi]) / 2) ** 2

    return delta


def fleiss_kappa(units: Iterable[Sequence[Value]]) -> float | None:
    """Fleiss' κ from the values each unit received (units with fewer than two are skipped;
    None if undefined), see the module docstring."""
    rated = [Counter(str(v) for v in values) for values in units if len(values) >= 2]
    if not rated:
        return None
    p_bar = sum(
        sum(x * (x - 1) for x in counts.values()) / (n * (n - 1))
        for counts in rated
        for n in [sum(counts.values())]
    ) / len(rated)
    totals: Counter[str] = Counter()
    for counts in rated:
        totals.update(counts)
    n_all = sum(totals.values())
    p_e = sum((x / n_all) ** 2 for x in totals.values())
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1 - p_e)


def agreement_table(
    labels: Mapping[str, Mapping[Unit, Value]],
    gold: Mapping[Unit, Value],
    seconds: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    """Project-level and per-annotator statistics, and κ for every annotator pair."""
    by_unit: dict[Unit, list[Value]] = defaultdict(list)
    for per_user in labels.values():
        for unit, value in per_user.items():
            by_unit[unit].append(value)
    agreement, n_pairs = pairwise_agreement(labels)
    annotators = {}
    for name in sorted(labels):
        mine = labels[name]
        on_gold = [(v, gold[u]) for u, v in mine.items() if u in gold and v != "tie"]
        times = sorted(seconds.get(name, []))
        others = {k: v for k, v in labels.items() if k != name}
        annotators[name] = {
            "labels": len(mine),
            "agreement_with_others": _agreement_with(mine, others),
            "gold_labels": len(on_gold),
            "gold_agreement": (sum(v == g for v, g in on_gold) / len(on_gold) if on_gold else None),
            "median_seconds": times[len(times) // 2] if times else None,
        }
    pairs = []
    for a, b in combinations(sorted(labels), 2):
        shared = labels[a].keys() & labels[b].keys()
        if shared:
            same = sum(labels[a][u] == labels[b][u] for u in shared)
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "shared": len(shared),
                    "agreement": same / len(shared),
                    "kappa": cohen_kappa(labels[a], labels[b]),
                }
            )
    gold_hits = [
        v == gold[u]
        for per_user in labels.values()
        for u, v in per_user.items()
        if u in gold and v != "tie"
    ]
    return {
        "units": len(by_unit),
        "overlapping_units": sum(len(v) >= 2 for v in by_unit.values()),
        "agreement": agreement,
        "agreement_pairs": n_pairs,
        "krippendorff_alpha": krippendorff_alpha(by_unit.values()),
        "gold_agreement": sum(gold_hits) / len(gold_hits) if gold_hits else None,
        "gold_labels": len(gold_hits),
        "annotators": annotators,
        "pairs": pairs,
    }


def _agreement_with(
    mine: Mapping[Unit, Value], others: Mapping[str, Mapping[Unit, Value]]
) -> float | None:
    agree = total = 0
    for theirs in others.values():
        shared = mine.keys() & theirs.keys()
        agree += sum(mine[u] == theirs[u] for u in shared)
        total += len(shared)
    return agree / total if total else None


def rating_tables(
    labels: Mapping[str, Mapping[Unit, Value]],
    gold: Mapping[Unit, Value],
    aspects: Sequence[Mapping[str, str]],
) -> dict[str, dict[str, Any]]:
    """Per aspect of a rating project: agreement, Cohen's κ per annotator pair, Krippendorff's
    α (ordinal for a Likert scale, nominal for thumbs), Fleiss' κ (thumbs), gold agreement
    and the mean score."""
    out = {}
    for aspect in aspects:
        name, thumbs = aspect["name"], aspect["scale"] == "thumbs"
        mine = {who: {u: v for u, v in per.items() if u[1] == name} for who, per in labels.items()}
        table = agreement_table(mine, {u: v for u, v in gold.items() if u[1] == name}, {})
        by_unit: dict[Unit, list[Value]] = defaultdict(list)
        for per_user in mine.values():
            for unit, value in per_user.items():
                by_unit[unit].append(value)
        scores = [float(v) for values in by_unit.values() for v in values]
        out[name] = {
            "scale": aspect["scale"],
            **{k: table[k] for k in ("units", "overlapping_units", "agreement", "pairs")},
            "alpha_metric": "nominal" if thumbs else "ordinal",
            "krippendorff_alpha": krippendorff_alpha(
                by_unit.values(), "nominal" if thumbs else "ordinal"
            ),
            "fleiss_kappa": fleiss_kappa(by_unit.values()) if thumbs else None,
            "gold_agreement": table["gold_agreement"],
            "gold_labels": table["gold_labels"],
            "mean": sum(scores) / len(scores) if scores else None,
        }
    return out
