"""The `varon` entry point: registers each command module."""

from __future__ import annotations

from typing import Annotated

import typer

from commands import backtest, bars, collect, config, db, execute, features, signal, status, train
from varon_cli import __version__

app = typer.Typer(
    name="varon",
    help="Composable commands for machine-learning crypto trading. Streams are Arrow IPC on pipes, or Arrow/Parquet files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(collect.app, name="collect")
app.command("bars")(bars.bars)
app.command("features")(features.features)
app.command("signal")(signal.signal)
app.add_typer(execute.app, name="execute")
app.command("backtest")(backtest.backtest)
app.command("train")(train.train)
app.add_typer(config.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(status.app, name="status")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"varon {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """varon: collect, bars, features, train, backtest, signal, execute."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
