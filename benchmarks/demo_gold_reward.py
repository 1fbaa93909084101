#!/usr/bin/env python
"""Is the reward model what limits the demo? PPO with the gold scorer itself as the reward.

The demo's PPO configuration with its reward model replaced by the simulated world's gold
scorer: `benchmarks.sim_pg --algo ppo --reward gold` (see its docstring; this name is kept for the
figures in docs/demo.md). Dotted overrides pass through, e.g. `kl_coef=0 ptx_coef=0
optim.lr=2e-4` for the no-leash ablation's settings.

- gold-reward PPO ≈ the demo's PPO: the learned RM costs little at this budget; what limits
  the win rate is the policy (what it can learn to do on new prompts at that KL);
- gold-reward PPO far above: the reward model is the limit.

    python -m benchmarks.demo_gold_reward --demo runs/demo [--out DIR] [key=value ...]
"""

import sys
from pathlib import Path

from benchmarks.sim_pg import main

if __name__ == "__main__":
    if "--out" not in sys.argv:  # the old default run directory
        demo = sys.argv[sys.argv.index("--demo") + 1] if "--demo" in sys.argv else "runs/demo"
        sys.argv += ["--out", str(Path(demo) / "ppo_gold_reward")]
    sys.argv[1:1] = ["--algo", "ppo", "--reward", "gold"]
    main()
