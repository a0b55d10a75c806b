-- 0003 (DuckDB): the same tables as sql/0003_execution.sql, without partitions
-- or unique constraints on the time series (see 0002).

CREATE TABLE IF NOT EXISTS signals (
    ts          TIMESTAMPTZ NOT NULL,
    bar_ts      TIMESTAMPTZ NOT NULL,
    symbol      VARCHAR NOT NULL,
    strategy    VARCHAR NOT NULL,
    target      DOUBLE,
    leverage    DOUBLE,
    stop_loss   DOUBLE,
    take_profit DOUBLE,
    price       DOUBLE,
    model_id    VARCHAR,
    venue       VARCHAR,
    bar_open    DOUBLE,
    bar_high    DOUBLE,
    bar_low     DOUBLE
);

CREATE TABLE IF NOT EXISTS orders (
    executor       VARCHAR NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    symbol         VARCHAR,
    cloid          VARCHAR,
    venue_order_id VARCHAR,
    side           VARCHAR,
    size           DOUBLE,
    price          DOUBLE,
    fee            DOUBLE,
    status         VARCHAR,
    reason         VARCHAR,
    strategy       VARCHAR
);

CREATE TABLE IF NOT EXISTS fills (
    executor       VARCHAR NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    symbol         VARCHAR,
    cloid          VARCHAR,
    venue_order_id VARCHAR,
    side           VARCHAR,
    size           DOUBLE,
    price          DOUBLE,
    fee            DOUBLE,
    status         VARCHAR,
    reason         VARCHAR,
    strategy       VARCHAR
);

CREATE TABLE IF NOT EXISTS equity (
    executor  VARCHAR NOT NULL,
    ts        TIMESTAMPTZ NOT NULL,
    strategy  VARCHAR NOT NULL,
    equity    DOUBLE,
    position  DOUBLE,
    pnl       DOUBLE,
    drawdown  DOUBLE
);

CREATE TABLE IF NOT EXISTS positions (
    executor    VARCHAR NOT NULL,
    strategy    VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    size        DOUBLE NOT NULL,
    entry       DOUBLE,
    stop_loss   DOUBLE,
    take_profit DOUBLE,
    leverage    DOUBLE,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (executor, strategy, symbol)
);

CREATE TABLE IF NOT EXISTS order_intents (
    executor   VARCHAR NOT NULL,
    cloid      VARCHAR PRIMARY KEY,
    strategy   VARCHAR NOT NULL,
    symbol     VARCHAR NOT NULL,
    bar_ts     TIMESTAMPTZ,
    side       VARCHAR NOT NULL,
    size       DOUBLE NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS strategies (
    name       VARCHAR PRIMARY KEY,
    kind       VARCHAR NOT NULL,
    config     JSON NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS models (
    model_id     VARCHAR PRIMARY KEY,
    algo         VARCHAR NOT NULL,
    path         VARCHAR,
    feature_hash VARCHAR,
    metrics      JSON NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
