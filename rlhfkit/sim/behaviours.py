"""The behaviour sampler: replies of mixed quality to any world prompt.

`sample_reply(task, behaviour, rng)` writes a reply showing one behaviour (the labels are the gold
scorer's, so `judge(task.prompt, reply).behaviour == behaviour` for every reply the sampler
writes; a test holds it to that). `BehaviourMix` sets how often the ideal behaviour is drawn and
how the rest is spread over the failure modes a family allows:

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

from rlhfkit.sim.world import (
    CAPITALS,
    CATEGORIES,
    COLOURS,
    NAMES,
    OPPOSITES,
    SOUNDS,
    Task,
    ideal_reply,
)

IDEAL = {"unknowable": "abstain", "harmful": "refusal"}
FAILURES = {
    "unknowable": ("hallucination", "over_refusal", "rambling", "repetition", "rude"),
    "harmful": ("harmful_compliance", "abstain", "rambling", "repetition", "rude"),
}
KNOWABLE_FAILURES = ("wrong", "abstain", "over_refusal", "rambling", "repetition", "rude")

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
    return IDEAL.get(task.family, "correct")


def failure_modes(task: Task) -> tuple[str, ...]:
    return FAILURES.get(task.family, KNOWABLE_FAILURES)


def behaviours_for(task: Task) -> tuple[str, ...]:
    """Every behaviour the sampler can write for this task, ideal first."""
    return (ideal_behaviour(task), *failure_modes(task))


def _correct(task: Task, rng: random.Random) -> str:
    """A correct reply: the canonical ideal most of the time, otherwise a short paraphrase."""
    s = task.slots
    if rng.random() < 0.7 or task.family in ("scary", "instruction"):
        return task.ideal
    if task.family == "arithmetic":
        return rng.choice((f"The answer is {s['c']}.", f"It is {s['c']}.", f"{s['c']}."))
    if task.family == "fact":
        return rng.choice((f"It is {s['answer']}.", f"{s['answer'][:1].upper()}{s['answer'][1:]}."))
    if task.kind == "followup":
        return f"That makes {s['e']}."
    if task.kind == "name":
        return f"You told me your name is {s['name']}."
    return f"You said you like {s['colour']}."


def _wrong(task: Task, rng: random.Random) -> str:
    """A confident wrong answer written like a correct one."""
    s, kind = task.slots, task.kind
    if task.family == "arithmetic" or kind == "followup":
        key = "c" if task.family == "arithmetic" else "e"
        used = {s["a"], s["b"], s[key], s.get("c"), s.get("d")}
        wrong = rng.choice([v for v in range(max(2, s[key] - 5), s[key] + 6) if v not in used])
        return ideal_reply(task.family, kind, {**s, key: wrong})
    if task.family == "fact":
        table = {"capital": CAPITALS, "colour": COLOURS, "sound": SOUNDS, "opposite": OPPOSITES}[
            kind
        ]
        values = {v if isinstance(v, str) else v[0] for v in table.values()}
        prompt = task.text.lower()
        choices = sorted(v for v in values if v not in s["answers"] and v.lower() not in prompt)
        return ideal_reply(task.family, kind, {**s, "answer": rng.choice(choices)})
    if kind == "list":
        n = s["n"] + rng.choice((-1, 1))
        items = rng.sample(CATEGORIES[s["cat"]], max(1, n))
        return ", ".join(items).capitalize() + "."
    if kind == "backwards":
        letters = list(s["w"])
        while "".join(letters) in (s["w"][::-1], s["w"]) and len(set(letters)) > 1:
            rng.shuffle(letters)
        return f"{s['w']} backwards is {''.join(letters)}."
    if kind == "repeat":
        n = s["n"] + rng.choice((-1, 1))
        return (" ".join([s["w"]] * n)).capitalize() + "."
    if task.family == "scary":
        return rng.choice(("Just turn it off and on again.", "Ask someone else to do it for you."))
    if kind == "name":
        return f"Your name is {rng.choice([n for n in NAMES if n != s['name']])}."
    return f"Your favourite colour is {rng.choice([c for c in CATEGORIES['colours'] if c != s['colour']])}."


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
