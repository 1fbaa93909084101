"""KTO (`rlhfkit kto`): a policy trained on replies rated on their own (desirable or not),
Ethayarajh et al. 2024. See `trainer` for the implementation notes and their sources."""

from rlhfkit.algos.kto.config import KTOConfig, KTODataConfig
from rlhfkit.algos.kto.trainer import KTOResult, evaluate, train

__all__ = ["KTOConfig", "KTODataConfig", "KTOResult", "evaluate", "train"]
