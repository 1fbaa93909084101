"""Every YAML shipped under `rlhfkit/configs/` validates against the config class its name
says (sft_* → SFTConfig, rm_* → RMConfig, ppo_* → PPOConfig, grpo_* / dr_grpo_* / dapo_* /
rloo_* / reinforce_* → PGConfig, dpo_* → DPOConfig, bon_* → BoNConfig, demo* → DemoConfig): a preset
with a misspelt or stale key fails here, not in a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.algos.bon import BoNConfig
from rlhfkit.algos.dpo import DPOConfig
from rlhfkit.algos.kto import KTOConfig
from rlhfkit.algos.online_dpo import OnlineDPOConfig
from rlhfkit.algos.pg import PGConfig
from rlhfkit.algos.ppo import PPOConfig
from rlhfkit.algos.rm import RMConfig
from rlhfkit.algos.sft import SFTConfig
from rlhfkit.config import PRESET_DIR, load_config
from rlhfkit.demo import DemoConfig

CLASS_OF = {
    "sft": SFTConfig,
    "rm": RMConfig,
    "ppo": PPOConfig,
    "demo": DemoConfig,
    "dpo": DPOConfig,
    "kto": KTOConfig,
    "online": OnlineDPOConfig,
    "iterative": OnlineDPOConfig,
    "bon": BoNConfig,
    **{name: PGConfig for name in ("grpo", "dr", "dapo", "rloo", "reinforce")},
}

# configs/accelerate/ holds Accelerate launch configs, not presets (tests/test_distributed.py)
SHIPPED = sorted(p for p in PRESET_DIR.rglob("*.yaml") if p.parent.name != "accelerate")


def _class_of(path: Path) -> type:
    prefix = path.stem.split("_")[0]
    assert prefix in CLASS_OF, f"{path.name}: name it <{'|'.join(CLASS_OF)}>_... or add its class"
    return CLASS_OF[prefix]


def test_there_are_presets_to_check():
    assert len(SHIPPED) >= 8


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path: Path):
    cfg = load_config(_class_of(path), path)
    if isinstance(cfg, (SFTConfig, RMConfig)):  # a trainer preset names what it trains on
        assert cfg.model.name_or_path and cfg.data.train
    assert cfg.model_dump()


def test_a_stale_key_in_a_preset_fails(tmp_path):
    bad = tmp_path / "sft_bad.yaml"
    bad.write_text((PRESET_DIR / "sft_sim.yaml").read_text() + "\nlearning_rate: 1.0\n")
    with pytest.raises(ValueError, match="learning_rate: unknown key"):
        load_config(_class_of(bad), bad)
