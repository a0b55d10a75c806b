"""`varon config show`: the effective configuration, secrets redacted."""

from __future__ import annotations

import json
from typing import Annotated

import tomli_w
import typer

from commands.common import ConfigOpt, run, setup
from varon_cli.errors import UsageError

app = typer.Typer(help="Inspect the layered configuration.", no_args_is_help=True)


@app.command("show")
def show(
    config: ConfigOpt = None,
    format: Annotated[str, typer.Option("--format", help="toml or json.")] = "toml",
) -> None:
    """Print the effective config (defaults < --config file < VARON_* environment), secrets redacted."""

    def body() -> None:
        if format not in ("toml", "json"):
            raise UsageError(f"--format {format!r}: use toml or json")
        cfg = setup(config, None, None)
        data = cfg.redacted()
        typer.echo(json.dumps(data, indent=2) if format == "json" else tomli_w.dumps(data).rstrip())

    run("config", body)
