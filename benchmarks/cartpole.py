"""Run examples/cartpole_ppo.py for several seeds, one after another, and tabulate the results.

    python -m benchmarks.cartpole --seeds 1 2 3            # the figures in docs/cartpole.md
    python -m benchmarks.cartpole --seeds 1 -- --lr 2.5e-4  # extra arguments go to the example

Seeds run sequentially (each example pins torch to one thread) so a shared machine keeps its
other cores. Prints each run's JSON line and then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cartpole_ppo.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("extra", nargs="*", help="arguments passed on to the example (after --)")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        command = [sys.executable, str(EXAMPLE), "--seed", str(seed), *args.extra]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        rows.append(result)
    print(
        "\n| seed | steps to mean return ≥ 475 (last 20 episodes) | final mean return | wall time (s) |"
    )
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['steps_to_475']} | {r['final_mean_return']} | {r['wall_s']} |")
    solved = sum(r["steps_to_475"] is not None for r in rows)
    print(f"\nsolved {solved} of {len(rows)}")


if __name__ == "__main__":
    main()
