"""`varon db`: the store: PostgreSQL for a server, DuckDB embedded (varon_cli/db/).

Four subcommands, each options in and one library call: `migrate`, `load`,
`export`, `verify-audit`. The DSN comes from --dsn, else config db.dsn
(VARON_DB__DSN), else the embedded file duckdb:///.varon/varon.duckdb.
Errors are one line, `varon db: error: ...`, and never show a password.
"""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from commands.common import ConfigOpt, InputOpt, KindOpt, LogFormatOpt, LogLevelOpt, OutputOpt, run, setup

log = logging.getLogger("varon.db")

app = typer.Typer(help="The database (PostgreSQL or embedded DuckDB): migrate, load, export, verify-audit.",
                  no_args_is_help=True)

DsnOpt = Annotated[Optional[str], typer.Option(
    "--dsn", help="postgresql://user@host/db or duckdb:///path (default: db.dsn, else duckdb:///.varon/varon.duckdb). "
                  "Keep passwords out of flags: VARON_DB__DSN, ~/.pgpass or PGPASSWORD.", show_default=False)]
ExecutorOpt = Annotated[Optional[str], typer.Option(
    "--executor", help="Executor name (`varon execute --name`) of orders, fills, equity or an audit log. "
                       "(default: default; an audit log's file name)", show_default=False)]


def _setup(dsn: str | None, config, log_level, log_format, **db):  # noqa: ANN001, ANN202 - typer's values
    """Config with the flags on top; the store's DSN and retry policy."""
    from varon_cli.db.connect import policy_from
    from varon_cli.db.dsn import parse_dsn

    cfg = setup(config, log_level, log_format, {"db": {"dsn": dsn, **db}})
    parsed = parse_dsn(cfg.db.dsn)
    if dsn and parsed.secrets:
        log.warning("--dsn carries a password, which other users can see in the process list; "
                    "use VARON_DB__DSN, ~/.pgpass or PGPASSWORD")
    return cfg, parsed, policy_from(cfg.db)


@app.command("migrate")
def migrate(
    to: Annotated[Optional[int], typer.Option("--to", help="Apply migrations up to this version only, e.g. 2.", show_default=False)] = None,
    dsn: DsnOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Apply the SQL migrations in sql/ (sql/duckdb/ for DuckDB) that the database lacks, each in its own transaction.

    Running it again applies nothing; a migration file edited after it was applied is refused.
    Example: VARON_DB__DSN=postgresql://varon@localhost/varon varon db migrate
    """

    def body() -> None:
        from varon_cli.db.migrate import migrate as apply

        _, store, policy = _setup(dsn, config, log_level, log_format)
        result = apply(store, to=to, policy=policy)
        log.info("%s: at migration %04d (%d applied now)", store.redacted, result.version, len(result.applied))

    run("db", body)


@app.command("load")
def load(
    input: InputOpt = "-",
    table: Annotated[Optional[str], typer.Option("--table", help="Target table (default: the one for the stream's kind; audit_log for *.jsonl).", show_default=False)] = None,
    executor: ExecutorOpt = None,
    interval: Annotated[Optional[str], typer.Option("--interval", help="Bar interval of a bars file without varon.interval metadata.", show_default=False)] = None,
    batch_rows: Annotated[Optional[int], typer.Option("--batch-rows", help="Rows per transaction at most (default db.batch_rows).", show_default=False)] = None,
    kind: KindOpt = None,
    dsn: DsnOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Load a varon stream or file into the table of its kind; loading the same rows again adds nothing.

    Bars go to market_data, trades, funding, signals, orders, fills and equity to their namesakes, an
    executor's audit log (.jsonl) to audit_log. One transaction per batch, rows bulk-copied.
    Example: varon bars --interval 1m -i trades.parquet | varon db load
    """

    def body() -> None:
        from varon_cli.db.load import LoadSettings, load_file
        from varon_cli.intervals import parse_duration

        cfg, store, policy = _setup(dsn, config, log_level, log_format, batch_rows=batch_rows)
        settings = LoadSettings(cfg.db.batch_rows, parse_duration(cfg.db.flush_interval, "flush_interval") / 1e9, policy)
        stats = load_file(store, input, settings, table=table, kind=kind, interval=interval, executor=executor)
        rate = stats.rows_read / stats.seconds if stats.seconds > 0 else 0.0
        log.info("%s: %d rows read, %d added (%d already there) in %.1f s, %.0f rows/s", stats.table,
                 stats.rows_read, stats.rows_added, stats.rows_read - stats.rows_added, stats.seconds, rate)

    run("db", body)


@app.command("export")
def export(
    table: Annotated[str, typer.Argument(help="bars (market_data), trades, funding, signals, orders, fills or equity.", show_default=False)],
    start: Annotated[Optional[str], typer.Option("--start", help="From this time (ISO date or date-time, UTC unless it says), inclusive.", show_default=False)] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="Up to this time, exclusive.", show_default=False)] = None,
    symbol: Annotated[Optional[str], typer.Option("--symbol", help="Symbol(s), comma-separated: BTC-USD,ETH-USD.", show_default=False)] = None,
    venue: Annotated[Optional[str], typer.Option("--venue", help="Venue(s), comma-separated.", show_default=False)] = None,
    interval: Annotated[Optional[str], typer.Option("--interval", help="Bar interval (bars hold one per stream).", show_default=False)] = None,
    executor: ExecutorOpt = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="Strategy name(s), comma-separated.", show_default=False)] = None,
    output: OutputOpt = "-",
    dsn: DsnOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Write a table's rows in a time range as a varon stream of its kind, in time order.

    Example: varon db export bars --symbol BTC-USD --start 2024-01-01 | varon features -o feat.parquet
    """

    def body() -> None:
        from varon_cli.db.export import ExportQuery, export_to, parse_time
        from varon_cli.db.tables import table_named

        _, store, policy = _setup(dsn, config, log_level, log_format)
        given = {"symbol": symbol, "venue": venue, "interval": interval, "executor": executor, "strategy": strategy}
        filters = {k: tuple(v.strip() for v in text.split(",") if v.strip()) for k, text in given.items() if text}
        query = ExportQuery(table_named(table), parse_time(start, "--start"), parse_time(end, "--end"), filters)
        stats = export_to(store, query, output, policy)
        log.info("%s: %d rows exported in %.1f s", stats.table, stats.rows, stats.seconds)

    run("db", body)


@app.command("verify-audit")
def verify_audit(
    executor: Annotated[Optional[str], typer.Option("--executor", help="Only this executor's records (default: every executor's).", show_default=False)] = None,
    dsn: DsnOpt = None,
    config: ConfigOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Re-check the audit logs' hash chains in the database; exit 65 naming the first broken record.

    Example: varon db verify-audit --executor default
    """

    def body() -> None:
        from varon_cli.db.audit import check_all

        _, store, policy = _setup(dsn, config, log_level, log_format)
        for check in check_all(store, executor, policy):
            log.info("audit_log %s: %d records, chain intact", check.executor, check.rows)

    run("db", body)
