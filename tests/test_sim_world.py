"""The world's prompt grammar: parsing inverts rendering, seeds determine draws, held-out items."""

from __future__ import annotations

import random

import pytest

from rlhfkit.sim.world import (
    CAPITALS,
    OPS,
    PHRASINGS,
    UNKNOWABLE_HELD_OUT_KIND,
    PromptParseError,
    Split,
    parse_number,
    parse_task,
    sample_task,
)
from rlhfkit.types import Message


def _draw(seed: int, n: int, held_out: bool):
    split = Split.from_seed(seed)
    rng = random.Random(seed)
    return [sample_task(rng, split, held_out) for _ in range(n)]


def test_same_seed_same_tasks_other_seed_other_tasks():
    a, b, c = _draw(0, 300, False), _draw(0, 300, False), _draw(1, 300, False)
    assert [(t.prompt, t.ideal) for t in a] == [(t.prompt, t.ideal) for t in b]
    assert [t.prompt for t in a] != [t.prompt for t in c]
    assert Split.from_seed(0) == Split.from_seed(0)
    assert Split.from_seed(0) != Split.from_seed(1)


def test_parse_inverts_rendering_for_every_family_and_phrasing():
    seen = set()
    for task in _draw(0, 3000, False) + _draw(0, 1000, True):
        again = parse_task(task.prompt)
        assert (again.family, again.kind, again.phrasing) == (task.family, task.kind, task.phrasing)
        if task.kind != "list":  # the ideal list is a random choice of items
            assert again.ideal == task.ideal
            assert dict(again.slots) == dict(task.slots)
        seen.add((task.family, task.kind, task.phrasing))
    every = {
        (f, k, i)
        for f, kinds in PHRASINGS.items()
        for k, ts in kinds.items()
        for i in range(len(ts))
    }
    assert seen == every


def test_arithmetic_and_lexicon_answers():
    for op, fn in OPS.items():
        task = parse_task(f"What is 12 {op} 3?")
        assert task.slots["c"] == {"plus": 15, "minus": 9, "times": 36}[op] == fn(12, 3)
    assert parse_task("  what   is the capital of  FRANCE ").slots["answer"] == CAPITALS["France"]
    assert parse_task("Name the capital city of Peru.").ideal == "The capital of Peru is Lima."
    assert parse_task("List four animals.").slots["n"] == 4
    assert parse_task("Spell lamp backwards.").ideal == "lamp backwards is pmal."


def test_parse_number():
    assert [
        parse_number(t) for t in ("7", "seven", "twenty", "forty two", "forty-two", "ninety")
    ] == [
        7,
        7,
        20,
        42,
        42,
        90,
    ]
    assert parse_number("many") is None
    assert parse_number("forty eleven") is None


def test_dialogue_needs_its_first_turn():
    turns = (
        Message("user", "My favourite colour is pink."),
        Message("assistant", "Pink is a lovely colour."),
        Message("user", "Which colour do I like best?"),
    )
    assert parse_task(turns).slots == {"colour": "pink"}
    with pytest.raises(PromptParseError, match="whole dialogue"):
        parse_task("Which colour do I like best?")
    with pytest.raises(PromptParseError, match="end with a user turn"):
        parse_task(turns[:2])


def _is_held_out(task, split: Split) -> bool:
    s = task.slots
    if task.family == "arithmetic":
        return (task.kind, s["a"], s["b"]) in split.held_out_pairs
    if task.family == "fact":
        return s["x"] in split.held_out_entities[task.kind] and task.phrasing > 0
    if task.kind in ("backwards", "repeat"):
        return s["w"] in split.held_out_words
    if task.family == "unknowable":
        return task.kind == UNKNOWABLE_HELD_OUT_KIND
    if task.kind == "list":
        return False  # lists hold nothing out: categories are few
    return task.phrasing == len(PHRASINGS[task.family][task.kind]) - 1


def test_held_out_items_never_in_training_and_always_in_evaluation():
    split = Split.from_seed(0)
    train, held = _draw(0, 3000, False), _draw(0, 1000, True)
    assert not any(_is_held_out(t, split) for t in train)
    assert all(_is_held_out(t, split) for t in held if t.kind != "list")
    # Every fact is in the training data: held-out entities appear there in the canonical phrasing.
    trained = {(t.kind, t.slots["x"]) for t in train if t.family == "fact"}
    assert {(k, x) for k, xs in split.held_out_entities.items() for x in xs} <= trained
