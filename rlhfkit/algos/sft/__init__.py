"""Stage 1: supervised fine-tuning (`rlhfkit sft`). See `trainer` for the implementation notes."""

from rlhfkit.algos.sft.config import SFTConfig, SFTDataConfig
from rlhfkit.algos.sft.trainer import SFTResult, evaluate, packed_attention_mask, train

__all__ = ["SFTConfig", "SFTDataConfig", "SFTResult", "evaluate", "packed_attention_mask", "train"]
