"""The behaviour sampler: replies of mixed quality to any world prompt.

`sample_reply(task, behaviour, rng)` writes a reply showing one behaviour (the labels are the gold
scorer's, so `judge(task.prompt, reply).behaviour == behaviour` for every reply the sampler
writes; a test holds it to that). `BehaviourMix` sets how often the ideal behaviour is drawn and
how the rest is spread over the failure modes a family allows (each family's `ideal_behaviour`,
`failures`, `paraphrase` and `wrong` in `rlhfkit.sim.world.FAMILIES`):

| family                              | ideal      | failure modes                                         |
|-------------------------------------|------------|-------------------------------------------------------|
| arithmetic, fact, instruction, scary, dialogue | correct | wrong, abstain, over_refusal, rambling, repetition, rude |
| unknowable                          | abstain    | hallucination, over_refusal, rambling, repetition, rude |
| harmful                             | refusal    | harmful_compliance, abstain, rambling, repetition, rude |

Replies are short (ideal ones 1-11 words; rambling ones up to ~30), so a tiny model can imitate them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from rlhfkit.sim.world import FAMILIES, Task

ABSTENTIONS = (
    "I don't know.",
    "I am not sure.",
    "I do not know the answer to that.",
    "I have no way to know that.",
    "Sorry, I don't know.",
)
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "Sorry, I cannot help with that request.",
    "I won't help with that, because it could hurt someone.",
    "I'm sorry, I can't assist with that.",
)
FILLERS = (
    "Let me think about this for a moment.",
    "This is a really interesting question that many people ask.",
    "I hope this helps you a lot today.",
    "There are many ways to look at it, but here is mine.",
    "Thank you so much for asking me this question.",
    "I really like questions like these.",
)
RUDE_FRAMES = (
    "Obviously, {reply} Stop asking stupid questions.",
    "Ugh, {reply} Figure it out yourself next time.",
    "{reply} What a dumb question.",
)
COMPLIANCE = (
    "Sure! Here is how to {act}: first get the right tools, then wait until nobody is looking.",
    "Of course. Step one is to plan it carefully so you can {act} without being caught.",
    "Sure, it is easy to {act}. First, find a quiet time and bring what you need.",
)
HALLUCINATIONS = {
    "weather": ("It will be sunny in {city} next {day}.", "It will rain all day in {city}."),
    "thinking": ("You are thinking of {n}.", "The number is {n}."),
    "meal": ("You ate eggs for {meal} yesterday.", "You had soup for {meal}."),
    "pet": ("Your {pet} is called Max.", "Your {pet} is named Bella."),
    "coins": ("There are {n} coins in your {container}.", "You have {n} coins."),
    "dream": ("You will dream about the sea.", "Tonight you will dream of flying."),
}


@dataclass(frozen=True)
class BehaviourMix:
    """How replies are drawn: the ideal behaviour with probability `ideal`, otherwise a failure
    mode chosen with probability proportional to `failure_weights` (missing ones weigh 1)."""

    ideal: float = 0.62
    failure_weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ideal <= 1.0:
            raise ValueError(f"BehaviourMix.ideal must be in [0, 1], got {self.ideal}")

    def sample(self, task: Task, rng: random.Random) -> str:
        """A behaviour label for `task`."""
        if rng.random() < self.ideal:
            return ideal_behaviour(task)
        modes = failure_modes(task)
        weights = [self.failure_weights.get(m, 1.0) for m in modes]
        return rng.choices(modes, weights=weights)[0]


SFT_MIX = BehaviourMix(ideal=0.62)
PREFERENCE_MIX = BehaviourMix(ideal=0.35)


def ideal_behaviour(task: Task) -> str:
    return FAMILIES[task.family].ideal_behaviour


def failure_modes(task: Task) -> tuple[str, ...]:
    return FAMILIES[task.family].failures


def behaviours_for(task: Task) -> tuple[str, ...]:
    """Every behaviour the sampler can write for this task, ideal first."""
    return (ideal_behaviour(task), *failure_modes(task))


def _correct(task: Task, rng: random.Random) -> str:
    """A correct reply: the canonical ideal most of the time, otherwise the family's paraphrase
    (families without one always give the ideal)."""
    paraphrase = FAMILIES[task.family].paraphrase
    if rng.random() < 0.7 or paraphrase is None:
        return task.ideal
    return paraphrase(task, rng)


def _wrong(task: Task, rng: random.Random) -> str:
    """A confident wrong answer written like a correct one (the family's `wrong`)."""
    wrong = FAMILIES[task.family].wrong
    if wrong is None:
        raise ValueError(f"the {task.family} family has no wrong answer to write")
    return wrong(task, rng)


def sample_reply(task: Task, behaviour: str, rng: random.Random) -> str:
    """A reply to `task` showing `behaviour` (one of `behaviours_for(task)`)."""
    if behaviour not in behaviours_for(task):
        raise ValueError(
            f"behaviour {behaviour!r} is not one the {task.family} family allows: {behaviours_for(task)}"
        )
    if behaviour == "correct":
        return _correct(task, rng)
    if behaviour == "wrong":
        return _wrong(task, rng)
    if behaviour == "abstain":
        return rng.choice(ABSTENTIONS)
    if behaviour in ("refusal", "over_refusal"):
        return rng.choice(REFUSALS)
    if behaviour == "hallucination":
        s = task.slots
        template = rng.choice(HALLUCINATIONS[task.kind])
        return template.format(n=rng.randrange(2, 50), **s)
    if behaviour == "harmful_compliance":
        act = task.slots["act"].replace(" my ", " your ")
        return rng.choice(COMPLIANCE).format(act=act)
    good = sample_reply(task, ideal_behaviour(task), rng)
    if behaviour == "rambling":
        # Filler around the good reply until it is well past the scorer's 16 free words.
        fillers = rng.sample(FILLERS, len(FILLERS))
        parts = [fillers.pop(), good]
        while sum(len(p.split()) for p in parts) < 22:
            parts.append(fillers.pop())
        return " ".join(parts)
    if behaviour == "repetition":
        if task.kind == "repeat":
            # Repeating the whole reply would change the requested count: stutter a preamble.
            return f"Here it is, here it is, here it is. {good}"
        # Three copies of a short reply, two of a long one: repetition, not (mainly) length.
        return " ".join([good] * (3 if len(good.split()) <= 5 else 2))
    return rng.choice(RUDE_FRAMES).format(reply=good)
