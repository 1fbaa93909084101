"""Stage 2: reward-model training (`rlhfkit rm`). See `trainer` for the implementation notes."""

from rlhfkit.algos.rm.config import RMConfig, RMDataConfig
from rlhfkit.algos.rm.evaluate import (
    agreement_by_group,
    calibration_table,
    expected_calibration_error,
    gold_gaps_of,
    groups_of,
    pair_metrics,
    score_pairs,
)
from rlhfkit.algos.rm.trainer import RMResult, evaluate, fit_normalization, train

__all__ = [
    "RMConfig",
    "RMDataConfig",
    "RMResult",
    "calibration_table",
    "evaluate",
    "expected_calibration_error",
    "fit_normalization",
    "agreement_by_group",
    "gold_gaps_of",
    "groups_of",
    "pair_metrics",
    "score_pairs",
    "train",
]
