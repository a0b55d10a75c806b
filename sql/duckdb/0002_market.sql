-- 0002 (DuckDB): market data, the same tables and columns as sql/0002_market.sql.
-- No partitions and no unique constraints: `varon db load` keeps a re-load from
-- adding rows with an anti-join on each table's key (varon_cli/db/tables.py).

CREATE TABLE IF NOT EXISTS market_data (
    ts          TIMESTAMPTZ NOT NULL,
    venue       VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    "interval"  VARCHAR NOT NULL,
    open        DOUBLE,
    high        DOUBLE,
    low         DOUBLE,
    close       DOUBLE,
    volume      DOUBLE,
    buy_volume  DOUBLE,
    vwap        DOUBLE,
    trades      BIGINT,
    partial     BOOLEAN
);

CREATE TABLE IF NOT EXISTS trades (
    ts          TIMESTAMPTZ NOT NULL,
    recv_ts     TIMESTAMPTZ,
    venue       VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    trade_id    VARCHAR NOT NULL,
    price       DOUBLE,
    size        DOUBLE,
    side        VARCHAR,
    seq         BIGINT
);

CREATE TABLE IF NOT EXISTS funding (
    ts            TIMESTAMPTZ NOT NULL,
    recv_ts       TIMESTAMPTZ,
    venue         VARCHAR NOT NULL,
    symbol        VARCHAR NOT NULL,
    funding_rate  DOUBLE,
    premium       DOUBLE,
    mark_price    DOUBLE,
    oracle_price  DOUBLE,
    open_interest DOUBLE
);
