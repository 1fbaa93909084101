"""The benchmarks still run: every script answers `--help` (its imports resolve and its argument
parser builds), the cheapest one runs for real, each is listed in benchmarks/README.md, and none
reaches into another script's folder through `sys.path` or imports a private rlhfkit name.

Nothing here times anything: figures come from running the scripts as benchmarks/README.md says.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
LIBRARIES = {
    "benchmarks.common",
    "benchmarks.speed_switches",
    "benchmarks.real.realdata",
}  # imported, not run
NEEDS = {  # the optional extra a script needs, checked by name (a missing one skips that script)
    "benchmarks.label_load": "fastapi",
    "benchmarks.label_sim_rm": "fastapi",
    "benchmarks.real.plot_curves": "matplotlib",
}


def _modules() -> list[str]:
    out = []
    for path in sorted(BENCH.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if name not in LIBRARIES:
            out.append(name)
    return out


def _run(module: str, argv: list[str]) -> tuple[int, str]:
    """`python -m module argv` in this process: (exit code, stdout)."""
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [module, *argv]
    sys.modules.pop(module, None)  # imported by another script: run it afresh as __main__
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue()


@pytest.mark.parametrize("module", _modules())
def test_every_benchmark_answers_help(module):
    if module in NEEDS:
        pytest.importorskip(NEEDS[module], reason=f"{module} needs the {NEEDS[module]} extra")
    code, text = _run(module, ["--help"])
    assert code == 0, text
    assert "usage:" in text and "--help" in text, text


def test_the_shell_benchmark_answers_help():
    proc = subprocess.run(
        ["bash", str(BENCH / "pg_cpu_time.sh"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "TRL_RUNNER" in proc.stdout


def test_the_sampler_benchmark_runs():
    """The cheapest benchmark for real: one JSON line per shape, with the fields the docs read."""
    code, text = _run("benchmarks.sampler_cost", ["--repeats", "1"])
    assert code == 0, text
    lines = [json.loads(x) for x in text.splitlines()]
    assert [(r["rows"], r["vocab"]) for r in lines] == [(64, 4096), (64, 32000), (16, 151936)]
    for r in lines:
        assert r["inverse_cdf_us"] > 0 and r["exponential_race_us"] > 0


def test_every_script_is_in_the_index():
    index = (BENCH / "README.md").read_text(encoding="utf-8")
    scripts = [p.relative_to(BENCH).as_posix() for p in BENCH.rglob("*.py")]
    scripts += [p.relative_to(BENCH).as_posix() for p in BENCH.rglob("*.sh")]
    missing = [s for s in scripts if not s.endswith("__init__.py") and f"`{s}`" not in index]
    assert not missing, f"not in benchmarks/README.md: {missing}"


def test_no_path_tricks_and_no_private_imports():
    found = []
    for path in sorted(BENCH.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "insert":
                if isinstance(node.value, ast.Attribute) and node.value.attr == "path":
                    found.append(f"{path.name}:{node.lineno}: sys.path.insert")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlhfkit"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(p.startswith("_") for p in node.module.split(".")):
                    found.append(f"{path.name}:{node.lineno}: private {node.module} {private}")
    assert not found, "\n".join(found)
