"""rlhfkit.sim: the simulated feedback world, rlhfkit's embedded offline default.

A procedurally generated helpful/honest/harmless world (`world`), a behaviour sampler of mixed
quality (`behaviours`), a gold scorer on the 3H principles that judges free text (`gold`),
simulated Bradley–Terry annotators (`annotators`), writers of the formats real data uses
(`make`), and a byte-level BPE tokenizer trained on the world's text (`tokenizer`).
See docs/sim_world.md.
"""

from rlhfkit.sim.annotators import (
    Annotator,
    Preference,
    annotator_agreement,
    calibrate_temperature,
    expected_agreement,
    gold_win_rate,
    make_annotators,
    simulate_preference,
)
from rlhfkit.sim.behaviours import BehaviourMix, behaviours_for, sample_reply
from rlhfkit.sim.gold import BEHAVIOURS, GoldJudgement, gold_score, judge, judge_task
from rlhfkit.sim.make import DEFAULT_SIZES, hh_transcript, make_world
from rlhfkit.sim.tokenizer import train_tokenizer
from rlhfkit.sim.world import PromptParseError, Split, Task, parse_task, sample_task

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_SIZES",
    "Annotator",
    "BehaviourMix",
    "GoldJudgement",
    "Preference",
    "PromptParseError",
    "Split",
    "Task",
    "annotator_agreement",
    "behaviours_for",
    "calibrate_temperature",
    "expected_agreement",
    "gold_score",
    "gold_win_rate",
    "hh_transcript",
    "judge",
    "judge_task",
    "make_annotators",
    "make_world",
    "parse_task",
    "sample_reply",
    "sample_task",
    "simulate_preference",
    "train_tokenizer",
]
