"""The simulated world's verifiable rewards for the online trainers: the gold score read from
each prompt's record, and the arithmetic exact match ("last integer" rule)."""

from __future__ import annotations

from rlhfkit.sim import gold_score
from rlhfkit.sim.rewards import arithmetic_exact_match, gold
from rlhfkit.types import PromptRecord, user


def test_gold_reward_is_the_gold_score_of_the_records_dialogue():
    records = [PromptRecord(user("What is 17 plus 25?")), PromptRecord(user("What is 3 times 4?"))]
    replies = ["  17 plus 25 is 42.  ", "I don't know."]
    # the prompt texts are ignored: the record's dialogue is what the world parses
    got = gold(["<chat template text>"] * 2, replies, records)
    assert got == [
        gold_score(records[0].prompt, "17 plus 25 is 42."),
        gold_score(records[1].prompt, "I don't know."),
    ]
    assert got[0] > got[1]


def test_arithmetic_exact_match_reads_the_last_integer():
    rec = PromptRecord(user("What is 17 plus 25?"))
    other = PromptRecord(user("What is the capital of France?"))
    cases = [
        (rec, "17 plus 25 is 42.", 1.0),
        (rec, "42", 1.0),
        (rec, "It is 42, not 41.", 0.0),  # the last integer decides
        (rec, "forty two", 0.0),  # digits only
        (rec, "I don't know.", 0.0),
        (other, "42", 0.0),  # not an arithmetic prompt
        (PromptRecord(user("not a prompt of the world")), "42", 0.0),
    ]
    got = arithmetic_exact_match([""] * len(cases), [c[1] for c in cases], [c[0] for c in cases])
    assert got == [c[2] for c in cases]
