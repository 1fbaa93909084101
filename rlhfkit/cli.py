"""The `rlhfkit` command.

    rlhfkit demo [--out DIR] [--quick]          the whole loop on the simulated world
    rlhfkit sft|rm|ppo|grpo|rloo|reinforce|dpo|kto|online-dpo|bon --config FILE [--preset NAME] [key=value ...]
    rlhfkit sim make|score|collect              the simulated feedback world
    rlhfkit data inspect PATH                   look at a dataset before training on it
    rlhfkit eval ...                            judges, win rates, reports
    rlhfkit rollout serve --model DIR           a vLLM rollout engine for rollout.engine=vllm_server
    rlhfkit config show ALGO                    every config key, its default and its help
    rlhfkit selfcheck                           quick numerical self-check of the math core

A mistake in the input (config, data file, model path, a reward function, a missing argument)
prints one line and exits with status 2; RLHFKIT_DEBUG=1 shows its traceback (`rlhfkit.errors`;
what is checked before a run starts: docs/errors.md).

Each training command is `load_config(<Algo>Config, file, overrides, preset)` then
`<algo>.train(cfg)`; modules are imported only when their command runs, so `--help` is fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from rlhfkit import __version__

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import NoArgsIsHelpError, UsageError


class OneLineUsageErrors(typer.core.TyperGroup):
    """The root command group: a usage mistake under any sub-command (a missing argument or
    option, an unknown option or command) is one red line and exit 2, like every other user
    mistake (`rlhfkit.errors`), instead of click's usage block; a group called without a
    sub-command still shows its help."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except UsageError as e:
            if isinstance(e, NoArgsIsHelpError):
                raise
            path = e.ctx.command_path if e.ctx is not None else ctx.command_path
            _fail(f"error: {path}: {e.format_message()} (see {path} --help)", e.exit_code)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="rlhfkit: RLHF (SFT, reward models, PPO / PPO-Max, ...) that is readable and fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command -> (module, config class, help). The module provides `train(cfg)`. Every module here
# must exist: a missing one is an error (tests/test_cli.py), never a silently absent command.
TRAINERS = {
    "sft": ("rlhfkit.algos.sft", "SFTConfig", "Supervised fine-tuning on demonstrations."),
    "rm": ("rlhfkit.algos.rm", "RMConfig", "Train a reward model on preference comparisons."),
    "ppo": ("rlhfkit.algos.ppo", "PPOConfig", "PPO against a reward model (presets: ppo_max)."),
    "grpo": (
        "rlhfkit.algos.pg",
        "PGConfig",
        "GRPO (group-normalised advantages; presets: grpo_sim, dr_grpo_sim, dapo_sim).",
    ),
    "rloo": ("rlhfkit.algos.pg", "PGConfig", "RLOO (leave-one-out baseline; preset: rloo_sim)."),
    "reinforce": (
        "rlhfkit.algos.pg",
        "PGConfig",
        "REINFORCE++ (whitened returns, no critic; preset: reinforce_sim).",
    ),
    "dpo": (
        "rlhfkit.algos.dpo",
        "DPOConfig",
        "Direct preference optimisation (loss_type: sigmoid, ipo, simpo, orpo).",
    ),
    "kto": (
        "rlhfkit.algos.kto",
        "KTOConfig",
        "KTO from replies rated on their own (thumbs / ratings; preset: kto_sim).",
    ),
    "online-dpo": (
        "rlhfkit.algos.online_dpo",
        "OnlineDPOConfig",
        "Online / iterative DPO: pairs sampled from the policy, labelled by the reward "
        "(presets: online_dpo_sim, iterative_dpo_sim).",
    ),
    "bon": ("rlhfkit.algos.bon", "BoNConfig", "Best-of-N sampling with a reward model."),
}

# a command's own starting values, under any preset, file or override
COMMAND_DEFAULTS: dict[str, dict[str, object]] = {
    "grpo": {"advantage": "grpo"},
    "rloo": {"advantage": "rloo", "kl_coef": 0.05},
    "reinforce": {"advantage": "reinforce_pp", "kl_coef": 0.05},
}

# sub-command groups owned by their packages: name -> module exposing `app`
GROUPS = {
    "sim": "rlhfkit.sim.cli",
    "data": "rlhfkit.data.cli",
    "eval": "rlhfkit.eval.cli",
    "label": "rlhfkit.label.cli",
    "rollout": "rlhfkit.rollout.cli",
}


def _fail(message: str, code: int = 2) -> None:
    from rlhfkit.errors import fail

    fail(message, code)


def _run_trainer(
    name: str,
    module: str,
    cls_name: str,
    config: Path | None,
    preset: str | None,
    overrides: list[str],
):
    """Load the config and train; a user mistake is one line and exit status 2, a bug a
    traceback (`rlhfkit.errors`; RLHFKIT_DEBUG=1 shows tracebacks for mistakes too)."""
    from rlhfkit.config import load_config
    from rlhfkit.errors import reported

    mod = importlib.import_module(module)
    with reported():
        cls = getattr(mod, cls_name)
        cfg = load_config(cls, config, overrides or [], preset, COMMAND_DEFAULTS.get(name))
        mod.train(cfg)
    _end_process_group()


def _end_process_group() -> None:
    """Under `accelerate launch`, meet the other processes and destroy the process group before
    the interpreter exits: left to the exit handlers, gloo's threads were sometimes torn down
    while still joinable ("terminate called without an active exception", exit -6) after a run
    had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
        _run_trainer(name, module, cls_name, config, preset, overrides or [])

    command.__doc__ = help_text
    app.command(name)(command)


for _name, (_module, _cls, _help) in TRAINERS.items():
    _make_trainer_command(_name, _module, _cls, _help)

for _name, _module in GROUPS.items():
    app.add_typer(importlib.import_module(_module).app, name=_name)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="seed for the world and every stage")] = 0,
    quick: Annotated[bool, typer.Option(help="tiny sizes: an end-to-end smoke run")] = False,
    reuse: Annotated[
        str | None,
        typer.Option(help="take the stages up to this one from the earlier run in --out"),
    ] = None,
    stop_after: Annotated[str | None, typer.Option(help="end the run after this stage")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value over demo.yaml, e.g. ppo.kl_coef=0.2")
    ] = None,
) -> None:
    """The whole loop on the simulated world: SFT → RM → PPO-Max → evaluation → report."""
    from rlhfkit.demo import run_demo
    from rlhfkit.errors import reported

    with reported():
        run_demo(
            out, seed=seed, quick=quick, reuse=reuse, stop_after=stop_after,
            overrides=overrides or [],
        )  # fmt: skip


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

    if algo not in TRAINERS:
        _fail(f"unknown algorithm {algo!r}; available: {', '.join(TRAINERS)}")
    module, cls_name, _ = TRAINERS[algo]
    cls = getattr(importlib.import_module(module), cls_name)
    if preset:
        try:
            typer.echo(
                to_yaml(load_config(cls, preset=preset, defaults=COMMAND_DEFAULTS.get(algo)))
            )
        except ConfigError as e:
            _fail(str(e))
        return
    table = Table("key", "default", "help")
    for key, default, help_text in describe(cls):
        table.add_row(key, default, help_text)
    Console().print(table)


ACCELERATE_CONFIGS = ("ddp", "fsdp2", "zero2", "zero3")


@config_app.command("accelerate")
def config_accelerate(
    name: Annotated[str, typer.Argument(help="ddp, fsdp2, zero2 or zero3")],
) -> None:
    """Print the path of a shipped Accelerate config, for `accelerate launch --config_file`
    (docs/scale.md)."""
    from rlhfkit.config import PRESET_DIR

    if name not in ACCELERATE_CONFIGS:
        _fail(f"unknown Accelerate config {name!r}; shipped: {', '.join(ACCELERATE_CONFIGS)}")
    typer.echo(str(PRESET_DIR / "accelerate" / f"{name}.yaml"))


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
