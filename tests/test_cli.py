"""The command line: help, version, selfcheck, config errors shown as messages (no traceback)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("selfcheck", "config"):
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("rlhfkit ")


def test_selfcheck_passes():
    result = runner.invoke(app, ["selfcheck"])
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "rlhfkit" in out.stdout


def test_trainer_config_error_is_a_message_naming_the_key():
    result = runner.invoke(app, ["rm", "optim.lrr=3"])
    assert result.exit_code == 2
    assert "optim.lrr: unknown key" in result.output and "Traceback" not in result.output


def test_config_show_lists_keys_with_help():
    result = runner.invoke(app, ["config", "show", "ppo"])
    assert result.exit_code == 0 and "kl_coef" in result.output


def test_commands_quiet_library_chatter_unless_verbose(monkeypatch):
    import logging

    from transformers.utils import logging as hf_logging

    from rlhfkit import cli

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    before = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        CliRunner().invoke(cli.app, ["--verbose", "config", "show", "sft"])
        assert hf_logging.get_verbosity() == logging.WARNING
        assert hf_logging.is_progress_bar_enabled()
        result = CliRunner().invoke(cli.app, ["config", "show", "sft"])
        assert result.exit_code == 0, result.output
        assert hf_logging.get_verbosity() == logging.ERROR
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)
        hf_logging.enable_progress_bar()


def test_every_training_command_has_its_module_and_config():
    """A command whose module is missing is an error here, never a silently absent command."""
    import importlib

    from pydantic import BaseModel

    from rlhfkit.cli import TRAINERS

    for name, (module, cls_name, _) in TRAINERS.items():
        mod = importlib.import_module(module)
        assert callable(mod.train), name
        assert issubclass(getattr(mod, cls_name), BaseModel), name
