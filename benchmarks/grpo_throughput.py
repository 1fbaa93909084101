#!/usr/bin/env python
"""GRPO throughput on the anchor workload: `benchmarks.pg_throughput --algo grpo` (see its docstring).

python -m benchmarks.grpo_throughput [--assets DIR] [--precision fp32 bf16]
"""

from benchmarks.pg_throughput import main

if __name__ == "__main__":
    main("grpo")
