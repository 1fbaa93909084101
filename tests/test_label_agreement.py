"""Agreement statistics against published worked examples and naive definitions."""

from __future__ import annotations

import itertools
import random

import pytest

from rlhfkit.label.agreement import (
    agreement_table,
    cohen_kappa,
    comparison_labels,
    gold_labels,
    krippendorff_alpha,
    pairwise_agreement,
)


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", §C: 4 observers,
    # 12 units, missing values; nominal alpha = 0.743.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = [[v for v in column if v is not None] for column in zip(a, b, c, d, strict=True)]
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
