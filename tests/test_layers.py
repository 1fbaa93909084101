"""The architecture as a test: imports go one way (docs/architecture.md, "Layers"), algorithms
never import each other, and `rlhfkit.core` stays torch-only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rlhfkit"

# Lower number = lower layer. A module may import its own layer or lower ones, never higher.
# These are the floors the code stands on, each part on the lowest layer its imports allow
# (a part that imports nothing of another on its layer could share it). New parts go in here.
LAYER = {
    "core": 0,  # the math, torch only
    "types": 0,  # record types
    "config": 0,  # typed configuration
    "errors": 0,  # user mistakes as one line
    "data": 1,  # readers, tokenization, batching
    "engine": 1,  # accelerate, run directory, checkpoints, optimiser, the one step path
    "models": 2,  # loading and heads (uses data.ensure_pad_token)
    "rollout": 3,  # prompts, generation, scoring, in-loop evaluation (uses models)
    "env": 4,  # multi-turn environments, tools, the episode driver (uses rollout)
    "update": 5,  # policy and critic steps, online run state (rollout, engine)
    "label": 4,  # the feedback-collection app (generates chat replies through rollout)
    "sim": 5,  # the simulated world (samples through rollout; labels through the label app)
    "algos": 6,  # the training loops (update, rollout, models, data, engine; never sim)
    "eval": 7,  # judges use the world's gold scorer; evaluation samples through rollout
    "demo": 8,
    "cli": 9,
    "selfcheck": 9,
}
COMMANDS = {"cli", "selfcheck"}  # entry points sit on top whatever they import


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


def test_every_layer_is_a_real_floor():
    """Each part but the lowest imports something exactly one layer down (or the layer is
    shared with a part it does not need): the table holds no layer that nothing stands on."""
    deps: dict[str, set[str]] = {}
    for module, path in _modules():
        own = _part(module)
        if own in LAYER:
            deps.setdefault(own, set()).update(
                p for p in map(_part, _imports(path)) if p in LAYER and p != own
            )
    for part, layer in LAYER.items():
        if layer == 0 or part in COMMANDS:
            continue
        below = {LAYER[p] for p in deps.get(part, ())}
        assert max(below, default=-1) == layer - 1, (
            f"{part} on layer {layer} imports only layers {sorted(below)}: lower it"
        )


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
