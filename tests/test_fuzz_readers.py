"""Fuzzing the readers and `rlhfkit data inspect`: random bytes, random JSON values and random
truncations of valid files give a clean read or a clean `DataError`, never another exception
(a traceback for the user) and never a hang (each example runs under a time limit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data import DataError, ReadResult, read

FIX = Path(__file__).resolve().parent / "fixtures" / "data"
FIXTURES = sorted(FIX.glob("*.jsonl"))
TASKS = ("sft", "preferences", "ranked", "prompts")
SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".parquet")

# No per-example deadline (a loaded 2-core machine makes timings noisy); a hang fails the
# test through pytest-timeout instead.
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "prompt",
                    "chosen",
                    "rejected",
                    "response",
                    "responses",
                    "scores",
                    "messages",
                    "instruction",
                    "input",
                    "output",
                    "conversations",
                    "from",
                    "value",
                    "role",
                    "content",
                    "history",
                    "system",
                    "completion",
                    "margin",
                    "x",
                ]
            ),  # fmt: skip
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _read_cleanly(path: Path, task: str, on_error: str) -> None:
    """The property: a `ReadResult`, or a `DataError` whose message names the source."""
    try:
        result = read(path, task, on_error=on_error)  # type: ignore[arg-type]
    except DataError as e:
        assert path.name in str(e), str(e)
        return
    assert isinstance(result, ReadResult)
    # every skipped row is reported (one problem or more each), and only under "skip"
    assert result.n_skipped <= min(len(result.problems), result.n_rows)
    assert (result.n_skipped > 0) == bool(result.problems)
    assert on_error == "skip" or not result.problems


@pytest.mark.timeout(120)
@FUZZ
@given(
    data=st.binary(max_size=300),
    suffix=st.sampled_from(SUFFIXES),
    task=st.sampled_from(TASKS),
    on_error=st.sampled_from(["stop", "skip"]),
)
def test_random_bytes(tmp_path_factory, data, suffix, task, on_error):
    path = tmp_path_factory.mktemp("bytes") / f"f{suffix}"
    path.write_bytes(data)
    _read_cleanly(path, task, on_error)


@pytest.mark.timeout(120)
@FUZZ
@given(rows=st.lists(json_values, max_size=4), task=st.sampled_from(TASKS))
def test_random_json_values(tmp_path_factory, rows, task):
    folder = tmp_path_factory.mktemp("json")
    (folder / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "f.json").write_text(json.dumps(rows))
    for name in ("f.jsonl", "f.json"):
        _read_cleanly(folder / name, task, "skip")
        _read_cleanly(folder / name, task, "stop")


@pytest.mark.timeout(120)
@FUZZ
@given(
    fixture=st.sampled_from(FIXTURES),
    cut=st.floats(0.0, 1.0),
    task=st.sampled_from(TASKS),
)
def test_random_truncations_of_valid_files(tmp_path_factory, fixture, cut, task):
    data = fixture.read_bytes()
    path = tmp_path_factory.mktemp("cut") / fixture.name
    path.write_bytes(data[: int(cut * len(data))])
    _read_cleanly(path, task, "skip")


runner = CliRunner()


@pytest.mark.timeout(120)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200) | st.sampled_from([b"", b" \n\n", b"{}", b"[]", b"null\n"]))
def test_data_inspect_never_shows_a_traceback(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cli") / "f.jsonl"
    path.write_bytes(data)
    result = runner.invoke(app, ["data", "inspect", str(path)])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output


@pytest.mark.timeout(120)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=120) | st.sampled_from([b"", b"\n \n", b"[1]\n"]))
def test_eval_run_on_random_prompt_files_is_clean(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("eval")
    (folder / "p.jsonl").write_bytes(data)
    result = runner.invoke(
        app,
        ["eval", "run", "--policy", f"a={folder}", "--prompts", str(folder / "p.jsonl"),
         "--out", str(folder / "o")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output  # no usable prompts, or no model in `folder`
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
