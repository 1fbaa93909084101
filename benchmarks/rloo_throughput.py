#!/usr/bin/env python
"""RLOO throughput on the anchor workload: `benchmarks.pg_throughput --algo rloo` (see its docstring).

python -m benchmarks.rloo_throughput [--assets DIR] [--precision fp32 bf16]
"""

from benchmarks.pg_throughput import main

if __name__ == "__main__":
    main("rloo")
