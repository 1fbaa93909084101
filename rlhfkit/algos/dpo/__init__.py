"""Offline preference optimisation (`rlhfkit dpo`): DPO, conservative DPO, IPO, SimPO, ORPO. See
`trainer` for the implementation notes and their sources."""

from rlhfkit.algos.dpo.config import DPOConfig, DPODataConfig
from rlhfkit.algos.dpo.trainer import LOSSES, DPOResult, evaluate, reference_logps, train

__all__ = [
    "LOSSES",
    "DPOConfig",
    "DPODataConfig",
    "DPOResult",
    "evaluate",
    "reference_logps",
    "train",
]
