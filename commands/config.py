"""`varon config show`: the effective configuration, secrets redacted."""

from __future__ import annotations

import json
from typing import Annotated

import tomli_w
import typer

from commands.common import ConfigOpt, run, setup

app = typer.Typer(help="Inspect the layered configuration.", no_args_is_help=True)


@app.command("show")
def show(
    config: ConfigOpt = None,
    format: Annotated[str, typer.Option("--format", help="toml or json.")] = "toml",
) -> None:
    """Print the effective config (defaults < --config file < VARON_* environment), secrets redacted."""

    def body() -> None:
        cfg = setup(config, None, None)
        data = cfg.redacted()
        typer.echo(json.dumps(data, indent=2) if format == "json" else tomli_w.dumps(data).rstrip())

    run("config", body)
