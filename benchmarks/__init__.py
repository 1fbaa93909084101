"""The scripts behind the measured figures in README.md and docs/ (index: benchmarks/README.md).

A package: run a script as `python -m benchmarks.NAME` from the repository root; shared
measuring code is in `benchmarks.common`, the anchor workload's assets in `benchmarks.assets`.
"""
