"""Online and iterative DPO (`rlhfkit online-dpo`): pairs sampled from the current policy and
labelled by the reward, then DPO / IPO steps (Guo et al. 2024; Xiong et al. 2024). See `trainer`
for the implementation notes and their sources."""

from rlhfkit.algos.online_dpo.config import OnlineDPOConfig
from rlhfkit.algos.online_dpo.trainer import OnlineDPOResult, label_pairs, train

__all__ = ["OnlineDPOConfig", "OnlineDPOResult", "label_pairs", "train"]
