"""Best-of-n sampling (`rlhfkit bon`): inference, rejection-sampling fine-tuning data and
preference pairs, at the analytic KL log n − (n − 1)/n. See `sampling` for the details."""

from rlhfkit.algos.bon.config import BoNConfig
from rlhfkit.algos.bon.runner import BoNResult, prompt_field, train, write_outputs
from rlhfkit.algos.bon.sampling import (
    Candidates,
    pick_best,
    pick_worst,
    sample_candidates,
    weighted,
)

__all__ = [
    "BoNConfig",
    "BoNResult",
    "Candidates",
    "pick_best",
    "pick_worst",
    "prompt_field",
    "sample_candidates",
    "train",
    "weighted",
    "write_outputs",
]
