-- 0002: market data: bars (market_data), trades, funding.
--
-- Columns are the stream kinds' (varon_cli/schemas.py); bars add `interval`
-- (the stream's varon.interval metadata). Times are timestamptz, which holds
-- microseconds: `varon db load` floors nanosecond stream times to the
-- microsecond. Identifier-like text is COLLATE "C" (byte order: fast, stable
-- key comparisons whatever the database's locale).
-- The unique keys are what makes a re-load add nothing (varon_cli/db/tables.py
-- names the same keys; a test keeps the two equal).

SELECT varon_create_timeseries('market_data', $cols$
    ts          timestamptz NOT NULL,
    venue       text COLLATE "C" NOT NULL,
    symbol      text COLLATE "C" NOT NULL,
    interval    text COLLATE "C" NOT NULL,
    open        float8,
    high        float8,
    low         float8,
    close       float8,
    volume      float8,
    buy_volume  float8,
    vwap        float8,
    trades      bigint,
    partial     boolean
$cols$, 'venue, symbol, interval, ts', 'venue, symbol, interval');

-- Raw prints are the bulk of the data: dropped after two years on TimescaleDB.
SELECT varon_create_timeseries('trades', $cols$
    ts          timestamptz NOT NULL,
    recv_ts     timestamptz,
    venue       text COLLATE "C" NOT NULL,
    symbol      text COLLATE "C" NOT NULL,
    trade_id    text COLLATE "C" NOT NULL,
    price       float8,
    size        float8,
    side        text COLLATE "C",
    seq         bigint
$cols$, 'venue, symbol, trade_id, ts', 'venue, symbol', drop_after => interval '730 days');

SELECT varon_create_timeseries('funding', $cols$
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz,
    venue         text COLLATE "C" NOT NULL,
    symbol        text COLLATE "C" NOT NULL,
    funding_rate  float8,
    premium       float8,
    mark_price    float8,
    oracle_price  float8,
    open_interest float8
$cols$, 'venue, symbol, ts', 'venue, symbol');
