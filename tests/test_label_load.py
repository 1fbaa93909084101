"""The short version of benchmarks/label_load.py: 50 concurrent annotators on 127.0.0.1 for a
moment, then `kill -9` of the server mid-burst and a restart: every acknowledged judgment is in
the database exactly once and nothing is half-written, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from label_helpers import BACKENDS, fresh_url

BENCH = Path(__file__).parents[1] / "benchmarks" / "label_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("label_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", BACKENDS)
def test_fifty_clients_and_a_kill_9_lose_nothing(backend, tmp_path):
    bench = _bench()
    with fresh_url(backend, tmp_path) as url:
        result = bench.run(url, tmp_path / "out", clients=50, seconds=1.0, kill_after=1.0, items=20)
    check = result["check"]
    assert result["judgments"] > 0 and result["errors"] == {}, result
    assert result["crash"]["acked_before_kill"] > 0, result  # the kill hit a running burst
    assert result["crash"]["acked_after_restart"] > 0, result
    assert check["lost"] == 0 and check["duplicated"] == 0, check
    assert check["judgment_without_done_task"] == 0 and check["done_task_without_judgment"] == 0, (
        check
    )
    # a judgment in flight when the server died is either wholly there or wholly absent
    assert 0 <= check["judgments"] - check["acknowledged"] <= result["crash"]["cut_off_by_kill"]
    assert result["ok"]
