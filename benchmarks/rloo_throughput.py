#!/usr/bin/env python
"""RLOO throughput on the anchor workload: `pg_throughput.py --algo rloo` (see its docstring).

python benchmarks/rloo_throughput.py --assets ~/.cache/rlhfkit-anchors/assets [--precision fp32 bf16]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pg_throughput import main  # noqa: E402

if __name__ == "__main__":
    main("rloo")
