"""Token-budget batching (every index once, cost within budget, deterministic per seed and
epoch, K groups kept apart), the padding it saves against fixed-size batches, and splits."""

from __future__ import annotations

import random

import pytest

from rlhfkit.data import TokenBudgetSampler, fixed_batches, padding_fraction, split_records
from rlhfkit.types import PreferencePair, user


def _lengths(n: int = 2000, seed: int = 1) -> list[int]:
    # Long-tailed like real dialogue lengths: mostly short, a few long.
    rng = random.Random(seed)
    return [min(1024, max(4, int(rng.lognormvariate(4.5, 0.8)))) for _ in range(n)]


def test_padding_fraction_closed_form() -> None:
    lengths = [2, 4, 4, 1]
    # Batches [0, 1] cost 2·4 = 8 for 6 real tokens, [2, 3] cost 8 for 5: 1 − 11/16.
    assert padding_fraction(lengths, [[0, 1], [2, 3]]) == pytest.approx(5 / 16, abs=1e-12)
    assert padding_fraction(lengths, [[1, 2], [0], [3]]) == 0.0


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_covers_every_index_once_within_budget(shuffle: bool) -> None:
    lengths = _lengths()
    sampler = TokenBudgetSampler(lengths, max_tokens=4096, shuffle=shuffle, seed=3, bucket_size=512)
    batches = list(sampler)
    assert len(sampler) == len(batches)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 4096 for b in batches)


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    lengths = _lengths()
    a = TokenBudgetSampler(lengths, 4096, seed=7)
    b = TokenBudgetSampler(lengths, 4096, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(TokenBudgetSampler(lengths, 4096, seed=8)) != first


def test_sampler_saves_padding_against_fixed_batches() -> None:
    lengths = _lengths()
    sampler = TokenBudgetSampler(lengths, max_tokens=8192, seed=0)
    dynamic = padding_fraction(lengths, sampler.batches())
    # The fixed baseline gets the same mean number of sequences per batch.
    size = round(len(lengths) / len(sampler))
    fixed = padding_fraction(lengths, fixed_batches(len(lengths), size, seed=0))
    assert fixed > 0.4  # lognormal lengths in random batches waste a lot
    assert dynamic < 0.1 * fixed


def test_group_keys_never_mix_and_drop_last() -> None:
    lengths = [5] * 10 + [7] * 10
    keys = [2] * 10 + [3] * 10
    sampler = TokenBudgetSampler(lengths, max_tokens=21, group_keys=keys, seed=0)
    batches = list(sampler)
    assert all(len({keys[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(20))
    # 10 items of length 5 in batches of 4 → 4+4+2; of length 7 in batches of 3 → 3+3+3+1.
    dropped = TokenBudgetSampler(lengths, max_tokens=21, group_keys=keys, drop_last=True, seed=0)
    assert sorted(len(b) for b in dropped) == [3, 3, 3, 4, 4]


def test_sequence_over_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="longer than max_tokens=10"):
        TokenBudgetSampler([3, 11], max_tokens=10)


def test_split_records_by_prompt_and_seed() -> None:
    records = [PreferencePair(user(f"q{i // 3}"), f"a{i}", f"b{i}") for i in range(300)]
    train, val, test = split_records(records, (0.8, 0.1, 0.1), seed=0)
    assert len(train) + len(val) + len(test) == 300
    prompts = [{r.prompt for r in part} for part in (train, val, test)]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert [len(p) for p in prompts] == [80, 10, 10]  # 100 prompt groups split 80/10/10
    assert split_records(records, (0.8, 0.1, 0.1), seed=0) == [train, val, test]
    assert split_records(records, (0.8, 0.1, 0.1), seed=1) != [train, val, test]
    assert [records.index(r) for r in train] == sorted(records.index(r) for r in train)
    plain = split_records(list(range(10)), (0.5, 0.5), seed=0)
    assert sorted(plain[0] + plain[1]) == list(range(10)) and len(plain[0]) == 5
    with pytest.raises(ValueError, match="sum to 1"):
        split_records(records, (0.5, 0.2))


def test_padding_saved_on_real_hh_pairs() -> None:
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared"
    data = shared / "data" / "hh-rlhf" / "helpful-online-test.jsonl.gz"
    model = shared / "models" / "stories260K"
    if not (data.exists() and model.exists()):
        pytest.skip(f"real HH data or stories260K absent under {shared}; they live in ../shared")
    from transformers import AutoTokenizer

    from rlhfkit.data import encode_pairs, read_preferences

    tok = AutoTokenizer.from_pretrained(str(model))
    items = encode_pairs(tok, read_preferences(data, on_error="skip").records, max_length=4096)
    lengths = [it.length for it in items]
    fixed = (
        sum(padding_fraction(lengths, fixed_batches(len(items), 8, seed=s)) for s in range(3)) / 3
    )
    sampler = TokenBudgetSampler(lengths, max_tokens=8 * 4096, seed=0)
    assert len(sampler) <= len(fixed_batches(len(items), 8))  # no more steps than the baseline
    dynamic = padding_fraction(lengths, sampler.batches())
    assert fixed > 0.4 and dynamic < 0.05  # measured: about 0.54 against 0.03


def test_plan_steps_groups_micro_batches_per_step_and_cycles_epochs():
    from rlhfkit.data import plan_steps

    def of_epoch(e):  # 5 micro-batches per epoch, labelled by epoch
        return [[10 * e + i] for i in range(5)]

    # 2 epochs × 5 = 10 micro-batches, 2 per step (accum 1 × 2 processes) → 5 steps, in order
    plan = plan_steps(of_epoch, accum=1, world=2, epochs=2, max_steps=None)
    assert plan == [[[0], [1]], [[2], [3]], [[4], [10]], [[11], [12]], [[13], [14]]]
    # max_steps cycles epochs as needed and stops exactly there
    plan = plan_steps(of_epoch, accum=3, world=1, epochs=1, max_steps=4)
    assert len(plan) == 4 and plan[1] == [[3], [4], [10]] and plan[3] == [[14], [20], [21]]
    # the last incomplete step of the epochs is dropped, too little data is an error
    assert len(plan_steps(of_epoch, accum=2, world=1, epochs=1, max_steps=None)) == 2
    with pytest.raises(ValueError, match="not enough data for one optimiser step"):
        plan_steps(of_epoch, accum=3, world=2, epochs=1, max_steps=None)
