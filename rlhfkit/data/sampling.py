"""Batching and splitting: `TokenBudgetSampler`, `padding_fraction`, `split_records`.

Implementation details:

- Token-budget batches (fairseq's `max_tokens`, Ott et al. 2019): a batch's padded cost is
  batch size × longest sequence in it, and every batch costs at most `max_tokens`. To cut padding
  without losing randomness, indices are shuffled, cut into large buckets (`bucket_size`), sorted
  by length inside each bucket, and packed greedily into batches; the batch order is shuffled
  again. With `shuffle=False` the buckets are taken in index order and batches keep their order.
  `bucket_size` trades randomness for padding: a bucket holding the whole data set sorts it
  globally (least padding, batch *contents* nearly the same every epoch, only their order
  changes); small buckets mix more and pad more.
- Deterministic: the order depends only on (`seed`, epoch); `set_epoch(e)` changes it per epoch
  the way `torch.utils.data.DistributedSampler.set_epoch` does.
- `group_keys`: items with different keys never share a batch (e.g. ranked lists of different K,
  which `collate_ranked` cannot mix).
- For pairs pass `max_tokens / 2` (a pair is two rows), for ranked lists `max_tokens / K`.
- `split_records` keeps all records with the same prompt in the same split (by default), so a
  validation set never scores replies to prompts seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

from rlhfkit.data.problems import DataError

T = TypeVar("T")


class TokenBudgetSampler:
    """Batch sampler: lists of indices whose padded cost (size × max length) ≤ `max_tokens`."""

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        bucket_size: int = 4096,
        group_keys: Sequence[Hashable] | None = None,
    ) -> None:
        """`drop_last` drops the last, usually underfilled, batch of each bucket."""
        self.lengths = [int(n) for n in lengths]
        too_long = [i for i, n in enumerate(self.lengths) if n > max_tokens]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"{len(too_long)} sequence(s) longer than max_tokens={max_tokens} (e.g. index {i},"
                f" {self.lengths[i]} tokens): raise max_tokens or truncate with max_length"
            )
        if group_keys is not None and len(group_keys) != len(self.lengths):
            raise ValueError("group_keys must have one key per length")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.bucket_size = bucket_size
        self.group_keys = list(group_keys) if group_keys is not None else None
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches (computed once per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._make_batches())
        return self._cache[1]

    def _make_batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        groups: dict[Hashable, list[int]] = {}
        for i in order:
            groups.setdefault(self.group_keys[i] if self.group_keys else None, []).append(i)
        batches: list[list[int]] = []
        for members in groups.values():
            for start in range(0, len(members), self.bucket_size):
                bucket = sorted(
                    members[start : start + self.bucket_size], key=self.lengths.__getitem__
                )
                made = self._pack(bucket)
                if self.drop_last and made:
                    made.pop()
                batches.extend(made)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _pack(self, bucket: list[int]) -> list[list[int]]:
        out: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for i in bucket:
            n = self.lengths[i]
            if batch and (len(batch) + 1) * max(longest, n) > self.max_tokens:
                out.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, n)
        if batch:
            out.append(batch)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def fixed_batches(n: int, batch_size: int, shuffle: bool = True, seed: int = 0) -> list[list[int]]:
    """Plain fixed-size batches of `range(n)`: the baseline `padding_fraction` compares with."""
    order = list(range(n))
    if shuffle:
        random.Random(f"{seed}:0").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def plan_steps(
    batches_of_epoch: Callable[[int], list[list[int]]],
    accum: int,
    world: int,
    epochs: int,
    max_steps: int | None,
) -> list[list[list[int]]]:
    """The data plan of a trainer: per optimiser step, its micro-batches (index lists), `accum`
    per process for `world` processes, over `epochs` passes of `batches_of_epoch(e)` or, when
    `max_steps` is set, exactly that many steps (cycling epochs as needed). The plan depends only
    on what `batches_of_epoch` returns, so a resumed run replays the same steps."""
    per_step = accum * world
    flat: list[list[int]] = []
    e = 0
    while True:
        batches = batches_of_epoch(e)
        if not batches:  # cycling empty epochs towards max_steps would never end
            raise DataError([], header=f"no training batches in epoch {e}: the data is empty")
        flat.extend(batches)
        e += 1
        if (len(flat) >= max_steps * per_step) if max_steps else e >= epochs:
            break
    n = max_steps if max_steps else len(flat) // per_step
    if n == 0:
        raise DataError(
            [],
            header=f"not enough data for one optimiser step ({len(flat)} micro-batches, {per_step} "
            "needed); lower grad_accum_steps or data.max_tokens",
        )
    return [flat[s * per_step : (s + 1) * per_step] for s in range(n)]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions: 1 − Σ real tokens / Σ (batch size × longest in batch)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - real / padded if padded else 0.0


def split_records(
    records: Sequence[T],
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    key: Callable[[T], Hashable] | None = None,
) -> list[list[T]]:
    """Split `records` at random into len(fractions) parts (e.g. train/validation/test).

    Records sharing `key` (default: the prompt, when records have one) land in the same part,
    so part sizes follow `fractions` by group count. Deterministic given `seed`; records keep
    their original order inside each part.
    """
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    if key is not None:
        keys: list[Hashable] = [key(r) for r in records]
    elif records and hasattr(records[0], "prompt"):
        keys = [r.prompt for r in records]  # type: ignore[attr-defined]
    else:
        keys = list(range(len(records)))  # every record its own group
    index_of: dict[Hashable, int] = {}
    group_of = [index_of.setdefault(k, len(index_of)) for k in keys]
    groups = list(range(len(index_of)))
    random.Random(f"split:{seed}").shuffle(groups)
    part_of_group: dict[int, int] = {}
    start = 0
    cum = 0.0
    for p, f in enumerate(fractions):
        cum += f
        end = len(groups) if p == len(fractions) - 1 else round(cum * len(groups))
        for g in groups[start:end]:
            part_of_group[g] = p
        start = end
    parts: list[list[T]] = [[] for _ in fractions]
    for r, g in zip(records, group_of, strict=True):
        parts[part_of_group[g]].append(r)
    return parts


def epoch_batches(
    sampler: TokenBudgetSampler, epoch: int, max_items: int | None, seed: int
) -> list[list[int]]:
    """The sampler's batches of `epoch`, each split into chunks of at most `max_items` (the
    chunks keep the length sorting and are shuffled again, seeded by (seed, epoch))."""
    sampler.set_epoch(epoch)
    batches = [list(b) for b in sampler.batches()]
    if not max_items:
        return batches
    chunks = [b[i : i + max_items] for b in batches for i in range(0, len(b), max_items)]
    if len(chunks) != len(batches):
        random.Random(f"{seed}:{epoch}:max_items").shuffle(chunks)
    return chunks
