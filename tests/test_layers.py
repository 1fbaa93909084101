"""The architecture as a test: imports go one way (STYLE.md), algorithms never import each other,
and `rlhfkit.core` stays torch-only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rlhfkit"

# Lower number = lower layer. A module may import its own layer or lower ones, never higher.
LAYER = {
    "core": 0,
    "types": 1,
    "config": 1,
    "data": 2,
    "label": 2,
    "sim": 2,
    "models": 2,
    "rollout": 2,
    "engine": 2,
    "algos": 3,
    "eval": 4,
    "demo": 5,
    "cli": 5,
    "selfcheck": 5,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rlhfkit" else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        yield ".".join(rel.parts), path


def test_every_part_has_a_layer():
    for module, _ in _modules():
        part = _part(module)
        if part not in (None, "__init__"):
            assert part in LAYER, f"{module}: add its part {part!r} to LAYER in this test"


def test_imports_go_one_way():
    bad = []
    for module, path in _modules():
        own = _part(module)
        if own in (None, "__init__"):
            continue
        for imported in _imports(path):
            other = _part(imported)
            if other in LAYER and LAYER[other] > LAYER[own]:
                bad.append(f"{module} imports {imported} ({other} is above {own})")
    assert not bad, "\n".join(bad)


def test_algorithms_do_not_import_each_other():
    bad = []
    for module, path in _modules():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] != "algos":
            continue
        for imported in _imports(path):
            ip = imported.split(".")
            if len(ip) >= 3 and ip[:2] == ["rlhfkit", "algos"] and ip[2] != parts[2]:
                bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(bad)


def test_core_imports_only_torch():
    code = (
        "import sys, rlhfkit.core; "
        "bad = [m for m in ('transformers', 'accelerate', 'deepspeed', 'peft', 'datasets') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing rlhfkit.core pulled in {out.stdout.strip()}"
