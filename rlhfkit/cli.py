"""The `rlhfkit` command.

    rlhfkit demo [--out DIR] [--quick]          the whole loop on the simulated world
    rlhfkit sft|rm|ppo --config FILE [--preset NAME] [key.sub=value ...]
    rlhfkit sim make|score|collect              the simulated feedback world
    rlhfkit data inspect PATH                   look at a dataset before training on it
    rlhfkit eval ...                            judges, win rates, reports
    rlhfkit config show ALGO                    every config key, its default and its help
    rlhfkit selfcheck                           quick numerical self-check of the math core

Each training command is `load_config(<Algo>Config, file, overrides, preset)` then
`<algo>.train(cfg)`; modules are imported only when their command runs, so `--help` is fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated

import typer

from rlhfkit import __version__

app = typer.Typer(
    help="rlhfkit: RLHF (SFT, reward models, PPO / PPO-Max, ...) that is readable and fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command -> (module, config class). The module provides `train(cfg)`.
TRAINERS = {
    "sft": ("rlhfkit.algos.sft", "SFTConfig", "Supervised fine-tuning on demonstrations."),
    "rm": ("rlhfkit.algos.rm", "RMConfig", "Train a reward model on preference comparisons."),
    "ppo": ("rlhfkit.algos.ppo", "PPOConfig", "PPO against a reward model (presets: ppo_max)."),
    "dpo": ("rlhfkit.algos.dpo", "DPOConfig", "Direct preference optimisation."),
    "grpo": ("rlhfkit.algos.grpo", "GRPOConfig", "Group-relative policy optimisation."),
    "bon": ("rlhfkit.algos.bon", "BoNConfig", "Best-of-N sampling with a reward model."),
}

# sub-command groups owned by their packages: name -> module exposing `app`
GROUPS = {
    "sim": "rlhfkit.sim.cli",
    "data": "rlhfkit.data.cli",
    "eval": "rlhfkit.eval.cli",
    "label": "rlhfkit.label.cli",
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _run_trainer(
    module: str, cls_name: str, config: Path | None, preset: str | None, overrides: list[str]
):
    from rlhfkit.config import ConfigError, load_config

    mod = importlib.import_module(module)
    try:
        cfg = load_config(getattr(mod, cls_name), config, overrides or [], preset)
        mod.train(cfg)
    except ConfigError as e:
        _fail(f"config error: {e}")
    except _user_errors() as e:
        _fail(f"error: {e}")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input, shown as a message rather than a traceback."""
    errors: list[type[BaseException]] = [FileNotFoundError]
    if _exists("rlhfkit.data"):
        data = importlib.import_module("rlhfkit.data")
        if hasattr(data, "DataError"):
            errors.append(data.DataError)
    return tuple(errors)


def _make_trainer_command(name: str, module: str, cls_name: str, help_text: str) -> None:
    def command(
        overrides: Annotated[
            list[str] | None, typer.Argument(help="key.sub=value overrides")
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="YAML config file")
        ] = None,
        preset: Annotated[str | None, typer.Option(help="a preset shipped with rlhfkit")] = None,
    ) -> None:
        _run_trainer(module, cls_name, config, preset, overrides or [])

    command.__doc__ = help_text
    app.command(name)(command)


for _name, (_module, _cls, _help) in TRAINERS.items():
    if _exists(_module):
        _make_trainer_command(_name, _module, _cls, _help)

for _name, _module in GROUPS.items():
    if _exists(_module):
        app.add_typer(importlib.import_module(_module).app, name=_name)

if _exists("rlhfkit.demo"):

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/demo"),
        seed: Annotated[int, typer.Option(help="seed for the world and every stage")] = 0,
        quick: Annotated[bool, typer.Option(help="tiny sizes: an end-to-end smoke run")] = False,
    ) -> None:
        """The whole loop on the simulated world: SFT → RM → PPO-Max → evaluation → report."""
        from rlhfkit.demo import run_demo

        run_demo(out, seed=seed, quick=quick)


config_app = typer.Typer(help="Inspect configuration schemas.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    algo: Annotated[str, typer.Argument(help="sft, rm, ppo, ...")],
    preset: Annotated[str | None, typer.Option(help="show a preset's resolved values")] = None,
) -> None:
    """List every key of ALGO's config with its default (or preset) value and help text."""
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.config import ConfigError, describe, load_config, to_yaml

    if algo not in TRAINERS or not _exists(TRAINERS[algo][0]):
        _fail(
            f"unknown algorithm {algo!r}; available: {', '.join(n for n, v in TRAINERS.items() if _exists(v[0]))}"
        )
    module, cls_name, _ = TRAINERS[algo]
    cls = getattr(importlib.import_module(module), cls_name)
    if preset:
        try:
            typer.echo(to_yaml(load_config(cls, preset=preset)))
        except ConfigError as e:
            _fail(str(e))
        return
    table = Table("key", "default", "help")
    for key, default, help_text in describe(cls):
        table.add_row(key, default, help_text)
    Console().print(table)


@app.command()
def selfcheck() -> None:
    """Check the math core against closed forms (seconds); exits non-zero on any mismatch."""
    from rlhfkit.selfcheck import run_selfcheck

    ok = run_selfcheck()
    raise typer.Exit(0 if ok else 1)


def _quiet_libraries() -> None:
    """Keep the libraries' routine chatter out of rlhfkit's progress output: transformers
    warnings and weight-loading bars (a reward model built from a causal LM always "misses" its
    new head), and accelerate's note that tied embeddings were saved once. A TRANSFORMERS_VERBOSITY
    the user set wins; `rlhfkit --verbose ...` skips this."""
    import logging
    import os

    from transformers.utils import logging as hf_logging

    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="print the version")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="show transformers/accelerate warnings and bars")
    ] = False,
) -> None:
    if version:
        typer.echo(f"rlhfkit {__version__}")
        raise typer.Exit()
    if not verbose:
        _quiet_libraries()


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="rlhfkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
