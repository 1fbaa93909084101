"""Agreement statistics against published worked examples and naive definitions."""

from __future__ import annotations

import itertools
import random

import pytest

from rlhfkit.label.agreement import (
    agreement_table,
    cohen_kappa,
    comparison_labels,
    fleiss_kappa,
    gold_labels,
    krippendorff_alpha,
    pairwise_agreement,
    rating_labels,
    rating_tables,
)

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", §C: 4 observers, 12 units
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    # missing values; nominal alpha = 0.743.
    units = [[v for v in col if v is not None] for col in zip(*KRIPPENDORFF_2011, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_edge_cases():
    assert krippendorff_alpha([[1, 1], [2, 2], [1, 1]]) == pytest.approx(1.0)
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None  # no variation: undefined
    assert krippendorff_alpha([[1], [2]]) is None  # nothing labelled twice


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items, two raters: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7,
    # p_e = 0.5·0.6 + 0.5·0.4 = 0.5, kappa = 0.4 (Wikipedia, "Cohen's kappa", example 1).
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    a = {(i, 0, 1): x for i, (x, _) in enumerate(pairs)}
    b = {(i, 0, 1): y for i, (_, y) in enumerate(pairs)}
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, {}) is None


def test_pairwise_agreement_equals_a_naive_count():
    rng = random.Random(0)
    labels = {
        name: {(i, 0, 1): rng.choice([0, 1, "tie"]) for i in range(40) if rng.random() < 0.7}
        for name in ("a", "b", "c")
    }
    same = total = 0
    for x, y in itertools.combinations("abc", 2):
        for unit in labels[x]:
            if unit in labels[y]:
                total += 1
                same += labels[x][unit] == labels[y][unit]
    assert pairwise_agreement(labels) == (same / total, total)


def test_rankings_become_comparison_labels():
    # ranking best first: 2, 0, 3, 1
    labels = comparison_labels(7, None, [2, 0, 3, 1], 4)
    assert labels == {
        (7, 0, 1): 0, (7, 0, 2): 2, (7, 0, 3): 0, (7, 1, 2): 2, (7, 1, 3): 3, (7, 2, 3): 2,
    }  # fmt: skip
    assert comparison_labels(7, None, None, 2) == {(7, 0, 1): "tie"}
    assert comparison_labels(7, 1, None, 2) == {(7, 0, 1): 1}
    assert gold_labels(7, [1], 2) == {(7, 0, 1): 1}
    assert gold_labels(7, [2], 3) == {(7, 0, 2): 2, (7, 1, 2): 2}


def test_agreement_table_gold_and_time():
    labels = {"a": {(1, 0, 1): 0, (2, 0, 1): 1}, "b": {(1, 0, 1): 0, (2, 0, 1): "tie"}}
    table = agreement_table(labels, {(1, 0, 1): 0, (2, 0, 1): 0}, {"a": [3.0, 1.0, 2.0]})
    assert table["agreement"] == 0.5 and table["overlapping_units"] == 2
    assert table["annotators"]["a"]["gold_agreement"] == 0.5  # right on 1, wrong on 2
    assert table["annotators"]["b"]["gold_agreement"] == 1.0  # the tie is not counted
    assert table["gold_agreement"] == pytest.approx(2 / 3)
    assert table["annotators"]["a"]["median_seconds"] == 2.0


def _naive_ordinal_alpha(units):
    """Ordinal α straight from the definition: every ordered pair of values within a unit
    (weight 1/(m_u − 1)) for D_o, every ordered pair of pairable values for D_e, and
    δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)² with n_g counted value by value."""
    pairable = [v for u in units if len(u) >= 2 for v in u]
    n = len(pairable)
    count = {g: pairable.count(g) for g in set(pairable)}

    def d2(c, k):
        lo, hi = min(c, k), max(c, k)
        return (
            sum(x for g, x in count.items() if lo <= g <= hi) - (count[lo] + count[hi]) / 2
        ) ** 2

    d_o = sum(
        d2(u[i], u[j]) / (len(u) - 1)
        for u in units if len(u) >= 2
        for i in range(len(u)) for j in range(len(u)) if i != j
    ) / n  # fmt: skip
    d_e = sum(d2(a, b) for i, a in enumerate(pairable) for j, b in enumerate(pairable) if i != j)
    return 1 - d_o / (d_e / (n * (n - 1)))


def test_ordinal_alpha_matches_a_hand_computation():
    # units [1, 2], [2, 2], [1, 3]: n_1 = 2, n_2 = 3, n_3 = 1, n = 6;
    # δ²(1,2) = (5 − 2.5)² = 6.25, δ²(1,3) = (6 − 1.5)² = 20.25, δ²(2,3) = (4 − 2)² = 4;
    # D_o = (2·6.25 + 2·20.25) / 6 = 53/6; D_e = 2·(6·6.25 + 2·20.25 + 3·4) / 30 = 6;
    # α = 1 − 53/36 = −17/36 (1 against 3 is a large disagreement). Nominal: 1 − (4/6)/(22/30) = 1/11.
    units = [[1, 2], [2, 2], [1, 3]]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(-17 / 36, abs=1e-12)
    assert krippendorff_alpha(units) == pytest.approx(1 / 11, abs=1e-12)


def test_ordinal_alpha_matches_krippendorffs_worked_example_and_the_definition():
    units = [[v for v in col if v is not None] for col in zip(*KRIPPENDORFF_2011, strict=True)]
    alpha = krippendorff_alpha(units, "ordinal")
    assert alpha == pytest.approx(0.815, abs=5e-4)  # the paper's ordinal α
    assert alpha == pytest.approx(_naive_ordinal_alpha(units), abs=1e-12)
    rng = random.Random(1)
    for _ in range(20):
        units = [[rng.randint(1, 7) for _ in range(rng.randint(1, 4))] for _ in range(15)]
        assert krippendorff_alpha(units, "ordinal") == pytest.approx(
            _naive_ordinal_alpha(units), abs=1e-12
        )


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5
    # categories; P̄ = 0.378, P_e = 0.213, κ = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
              [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
              [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]  # fmt: skip
    units = [[c for c, x in enumerate(row) for _ in range(x)] for row in counts]
    kappa = fleiss_kappa(units)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    # the naive loop: agreeing ordered rater pairs per subject, category shares over all ratings
    p_bar = (
        sum(
            sum(a == b for i, a in enumerate(u) for j, b in enumerate(u) if i != j) / (14 * 13)
            for u in units
        )
        / 10
    )
    p_e = sum((sum(row[c] for row in counts) / 140) ** 2 for c in range(5))
    assert kappa == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    assert fleiss_kappa([[1, 1], [0, 0]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 1], [1, 1]]) is None  # one category only: undefined
    assert fleiss_kappa([[1], [0]]) is None  # nothing rated twice


def test_rating_tables_per_aspect():
    # two annotators rate three items on helpful (1–5) and harmless (thumbs)
    a = {**rating_labels(1, {"helpful": 5, "harmless": 1}), **rating_labels(2, {"helpful": 2, "harmless": 0}),
         **rating_labels(3, {"helpful": 4, "harmless": 1})}  # fmt: skip
    b = {**rating_labels(1, {"helpful": 4, "harmless": 1}), **rating_labels(2, {"helpful": 2, "harmless": 0}),
         **rating_labels(3, {"helpful": 4, "harmless": 0})}  # fmt: skip
    gold = rating_labels(1, {"helpful": 5})
    aspects = [{"name": "helpful", "scale": "1-5"}, {"name": "harmless", "scale": "thumbs"}]
    tables = rating_tables({"a": a, "b": b}, gold, aspects)
    helpful, harmless = tables["helpful"], tables["harmless"]
    assert helpful["alpha_metric"] == "ordinal" and helpful["fleiss_kappa"] is None
    assert helpful["krippendorff_alpha"] == pytest.approx(
        _naive_ordinal_alpha([[5, 4], [2, 2], [4, 4]]), abs=1e-12
    )
    assert helpful["agreement"] == pytest.approx(2 / 3) and helpful["mean"] == pytest.approx(21 / 6)
    assert helpful["gold_agreement"] == 0.5 and helpful["gold_labels"] == 2  # a right, b wrong
    assert harmless["alpha_metric"] == "nominal"
    assert harmless["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha([[1, 1], [0, 0], [1, 0]])
    )
    # Fleiss by hand: P_u = 1, 1, 0 -> P̄ = 2/3; p_up = 3/6 -> P_e = 1/2; κ = (2/3 − 1/2)/(1/2) = 1/3
    assert harmless["fleiss_kappa"] == pytest.approx(1 / 3, abs=1e-12)
    assert harmless["pairs"][0]["kappa"] == pytest.approx(cohen_kappa(
        {u: v for u, v in a.items() if u[1] == "harmless"}, {u: v for u, v in b.items() if u[1] == "harmless"}
    ))  # fmt: skip
