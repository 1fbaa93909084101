#!/usr/bin/env python
"""GRPO throughput on the anchor workload: `pg_throughput.py --algo grpo` (see its docstring).

python benchmarks/grpo_throughput.py --assets ~/.cache/rlhfkit-anchors/assets [--precision fp32 bf16]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pg_throughput import main  # noqa: E402

if __name__ == "__main__":
    main("grpo")
