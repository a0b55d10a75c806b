"""`varon backtest`: a strategy over history through the live executor, risk engine and paper venue."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, InputOpt, LogFormatOpt, LogLevelOpt, run, setup
from commands.signal import ExpectHashOpt, ModelOpt, ParamOpt, StrategyOpt, choose_strategy

log = logging.getLogger("varon.backtest")


def backtest(
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    model: ModelOpt = None,
    expect_hash: ExpectHashOpt = None,
    input: InputOpt = "-",
    fills_out: Annotated[Optional[str], typer.Option("--fills-out", help="Write the fills stream here.", show_default=False)] = None,
    equity_out: Annotated[Optional[str], typer.Option("--equity-out", help="Write the equity stream here.", show_default=False)] = None,
    orders_out: Annotated[Optional[str], typer.Option("--orders-out", help="Write orders, rejections and cancellations here.", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report (equity, drawdown, position charts).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (for scripts).")] = False,
    funding: Annotated[Optional[str], typer.Option("--funding", help="A funding stream (collect backfill hyperliquid / --funding-out) for hourly rates; else paper.funding_rate.", show_default=False)] = None,
    folds: Annotated[int, typer.Option("--folds", help="Walk-forward: N consecutive out-of-sample periods, each reported, then aggregated.")] = 1,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Backtest a strategy on features (or bars): signal + the same executor as `varon execute --venue paper`.

    The report (stderr) compares it with buy-and-hold over the same period; fills fill at the first price after
    each decision, with fees, slippage, funding, stops and liquidation (see --report for the stated assumptions).
    Example: varon backtest --strategy ema-cross -i features.parquet --report report.html
    """

    def body() -> None:
        from rich.console import Console

        from varon_cli.backtest import ASSUMPTIONS, fold_tables, metrics_of, run_backtest
        from varon_cli.errors import UsageError
        from varon_cli.intervals import format_interval
        from varon_cli.report.folds import aggregate_folds
        from varon_cli.report.page import write_html
        from varon_cli.report.render import render_report, report_json
        from varon_cli.schemas import BARS, FEATURES
        from varon_cli.streamio import open_input, open_output
        from varon_cli.strategies.registry import make_strategy
        from varon_cli.strategies.signals import check_features

        cfg = setup(config, log_level, log_format)
        if folds < 1:
            raise UsageError(f"--folds {folds}: must be at least 1")
        probe = choose_strategy(strategy, param, model)
        if expect_hash:
            probe.feature_hash = expect_hash
        with open_input(input, expect=(FEATURES, BARS)) as src:
            interval = check_features(probe, src.metadata, src.schema.names, src.label)
            table = src.read_all()
        if table.num_rows == 0:
            raise UsageError(f"{src.label}: no bars to backtest")
        rates = None
        if funding:
            from varon_cli.schemas import FUNDING as FUNDING_KIND

            with open_input(funding, expect=(FUNDING_KIND,)) as fsrc:
                rates = fsrc.read_all()
        periods = fold_tables(table, folds) if folds > 1 else [table]
        initial = cfg.paper.initial_equity
        console = Console(stderr=True)
        documents, per_fold, last = [], [], None
        for number, period in enumerate(periods, start=1):
            chosen = choose_strategy(strategy, param, model)  # fresh state for every period
            chosen.feature_hash = probe.feature_hash
            result = run_backtest(period, chosen, interval, cfg.risk, cfg.paper, src.label, rates)
            benchmark = run_backtest(period, make_strategy("buy-and-hold"), interval, cfg.risk, cfg.paper, src.label,
                                     rates)
            results = [(chosen.name, metrics_of(result, interval, initial)),
                       ("buy-and-hold", metrics_of(benchmark, interval, initial))]
            title = f"{chosen.name} on {src.label}, {format_interval(interval)} bars"
            if len(periods) > 1:
                title += f", fold {number}/{len(periods)}"
            if not as_json:
                render_report(results, title, console)
            documents.append({"title": title, **report_json(results)})
            per_fold.append(results[0][1])
            last = (result, benchmark, results, title)
            tripped = [name for name, on in result.executor.breakers.items() if on]
            if tripped:
                log.warning("%s: the %s breaker was tripped at the end: the strategy could only reduce after it "
                            "(raise risk.max_drawdown / risk.daily_loss_limit to study the strategy unguarded)",
                            title, " and ".join(tripped))
            counts = ", ".join(f"{v} {k}" for k, v in sorted(result.executor.counts.items()))
            log.info("%s: %d signals, %d fills; %s", title, result.signals.num_rows, result.fills.num_rows, counts)
        assert last is not None
        result, benchmark, results, title = last
        if len(periods) > 1:
            aggregate = aggregate_folds(per_fold)
            documents.append({"title": "walk-forward aggregate (mean, std, min, max)",
                              "aggregate": {k: list(v) for k, v in aggregate.items()}})
            if not as_json:
                _print_aggregate(console, aggregate)
        for path, table_out, kind in ((fills_out, result.fills, "fills"), (equity_out, result.equity, "equity"),
                                      (orders_out, result.orders, "orders")):
            if path:
                with open_output(path, table_out.schema) as dst:
                    for part in table_out.to_batches():
                        dst.write(part)
        if report:
            curves = {name: run.curve()[:2] for name, run in ((result.name, result), ("buy-and-hold", benchmark))}
            positions = {name: (run.curve()[0], run.curve()[2]) for name, run in ((result.name, result),)}
            write_html(report, results, curves, positions, title, assumptions=ASSUMPTIONS)
            log.info("wrote %s", report)
        if as_json:
            json.dump(documents if len(documents) > 1 else documents[0], sys.stdout, indent=2, allow_nan=False)
            sys.stdout.write("\n")

    run("backtest", body)


def _print_aggregate(console, aggregate: dict) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title="walk-forward aggregate over folds", title_justify="left", header_style="bold")
    for column in ("metric", "mean", "std", "min", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, values in aggregate.items():
        table.add_row(key, *(f"{v:.4g}" for v in values))
    console.print(table)
