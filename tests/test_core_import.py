"""`import rlhfkit.core` must load torch only: no transformers, accelerate or deepspeed."""

import subprocess
import sys

import rlhfkit.core


def test_core_imports_only_torch():
    code = (
        "import sys, rlhfkit.core; print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    assert "torch" in loaded
    assert not loaded & {"transformers", "accelerate", "deepspeed", "datasets", "peft"}


def test_all_names_are_exported():
    for name in rlhfkit.core.__all__:
        assert hasattr(rlhfkit.core, name), name
