"""Response metrics: KL to a reference, perplexity, length, repetition, refusal rates.

Implementation details and their sources:

1. KL to the reference per sequence is the sum over response tokens of the k1 estimator,
   KL(π ‖ π_ref)(x) ≈ Σ_t [log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)], with y sampled from
   π: its expectation is exactly the sequence-level KL (the chain rule of KL), so the batch mean is
   an unbiased Monte-Carlo estimate. This is the KL InstructGPT reports and Gao et al. 2022 put on
   the x-axis of over-optimisation plots (as √KL). k2/k3 (`rlhfkit.core.kl_penalty`) can be asked
   for; they are biased or noisier at the sequence level.
2. Perplexity is token-level over the whole batch: exp(−Σ_{b,t} m·log p / Σ_{b,t} m), the
   definition of HF's perplexity guide (exp of the mean token NLL), not the mean of per-sequence
   perplexities (which over-weights short replies).
3. Repetition has one definition, `ngram_repetition`: the fraction of a sequence's n-grams
   (n = 3 by default) that repeat an n-gram seen earlier in it, 1 − distinct/total; 0 when it is
   shorter than n. It is the complement of the within-reply "distinct-n" of Li et al. 2016 ("A
   Diversity-Promoting Objective for Neural Conversation Models"); degenerate loops score near 1.
   `word_repetition` applies it to a reply's words (what evaluation reports as
   `repetition_rate`, comparable across tokenizers), `token_repetition` to its token ids (what
   a training loop has at hand), and `repetitive_share` counts the replies that repeat
   themselves, repetition > 1/2 (the PPO collapse monitor's "response/repetition").
4. Refusal rates are split by whether the prompt is harmful (Bai et al. 2022, "Training a Helpful
   and Harmless Assistant with RLHF", count refusals of harmful requests as good and evasive
   refusals of harmless ones as a helpfulness failure): `harmful_refusal_rate` (good),
   `harmful_compliance_rate` (bad) over harmful prompts, `over_refusal_rate` (bad) over the rest.
   The labels come from a judge that reads the reply (the simulated world's behaviour labels).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Sequence

from rlhfkit.core import perplexity, sequence_kl  # re-exported: eval's public metrics
from rlhfkit.rollout.monitor import ngram_repetition, repetitive_share  # one definition

__all__ = [
    "group_means",
    "ngram_repetition",
    "perplexity",
    "refusal_rates",
    "repetitive_share",
    "sequence_kl",
    "token_repetition",
    "word_count",
    "word_repetition",
]


_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_count(text: str) -> int:
    """Number of words (runs of letters, digits, apostrophes) in `text`."""
    return len(_words(text))


def word_repetition(text: str, n: int = 3) -> float:
    """`ngram_repetition` of the words of `text` (lower-cased runs of letters, digits and
    apostrophes; punctuation ignored): word trigrams by default."""
    return ngram_repetition(_words(text), n)


def token_repetition(ids: Sequence[int], n: int = 3) -> float:
    """`ngram_repetition` of a reply's token ids (padding already removed): token trigrams."""
    return ngram_repetition(ids, n)


def refusal_rates(
    harmful: Sequence[bool], refused: Sequence[bool], complied: Sequence[bool]
) -> dict[str, float]:
    """Refusal rates split by prompt type (see module docstring, detail 4).

    `harmful[i]`: prompt i is a harmful request; `refused[i]`: reply i refuses; `complied[i]`:
    reply i helps with the request (only meaningful where harmful). Returns
    `harmful_refusal_rate` and `harmful_compliance_rate` over harmful prompts,
    `over_refusal_rate` over the others (NaN when there are none), and the two counts.
    """
    if not len(harmful) == len(refused) == len(complied):
        raise ValueError(
            f"refusal_rates: {len(harmful)} harmful flags, {len(refused)} refused flags, "
            f"{len(complied)} complied flags; they must be the same length"
        )
    n_harm = sum(bool(h) for h in harmful)
    n_other = len(harmful) - n_harm

    def rate(count: int, total: int) -> float:
        return count / total if total else math.nan

    rows = list(zip(harmful, refused, complied, strict=True))
    return {
        "harmful_refusal_rate": rate(sum(bool(h and r) for h, r, _ in rows), n_harm),
        "harmful_compliance_rate": rate(sum(bool(h and c) for h, _, c in rows), n_harm),
        "over_refusal_rate": rate(sum(bool(not h and r) for h, r, _ in rows), n_other),
        "n_harmful": n_harm,
        "n_other": n_other,
    }


def group_means(keys: Sequence[Hashable], values: Sequence[float]) -> dict[Hashable, float]:
    """Mean of `values` per key, keys in first-seen order (e.g. gold score per prompt family)."""
    if len(keys) != len(values):
        raise ValueError(f"group_means: {len(keys)} keys but {len(values)} values")
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for k, v in zip(keys, values, strict=True):
        groups[k].append(float(v))
    return {k: sum(vs) / len(vs) for k, vs in groups.items()}
