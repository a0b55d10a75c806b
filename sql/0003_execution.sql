-- 0003: what strategies decide and executors do: signals, orders, fills,
-- equity (time series), and the executor's current state: positions,
-- order_intents, plus the catalogues strategies and models.
--
-- orders, fills and equity add `executor` (the `varon execute --name`) to the
-- stream kinds' columns. Keys with nullable columns are NULLS NOT DISTINCT
-- (0001), so a re-load of a row with a null in its key still adds nothing.

SELECT varon_create_timeseries('signals', $cols$
    ts          timestamptz NOT NULL,
    bar_ts      timestamptz NOT NULL,
    symbol      text COLLATE "C" NOT NULL,
    strategy    text COLLATE "C" NOT NULL,
    target      float8,
    leverage    float8,
    stop_loss   float8,
    take_profit float8,
    price       float8,
    model_id    text,
    venue       text COLLATE "C",
    bar_open    float8,
    bar_high    float8,
    bar_low     float8
$cols$, 'strategy, symbol, bar_ts, ts', 'strategy, symbol');

SELECT varon_create_timeseries('orders', $cols$
    executor       text COLLATE "C" NOT NULL,
    ts             timestamptz NOT NULL,
    symbol         text COLLATE "C",
    cloid          text COLLATE "C",
    venue_order_id text COLLATE "C",
    side           text COLLATE "C",
    size           float8,
    price          float8,
    fee            float8,
    status         text COLLATE "C",
    reason         text,
    strategy       text COLLATE "C"
$cols$, 'executor, cloid, venue_order_id, status, ts', 'executor');

SELECT varon_create_timeseries('fills', $cols$
    executor       text COLLATE "C" NOT NULL,
    ts             timestamptz NOT NULL,
    symbol         text COLLATE "C",
    cloid          text COLLATE "C",
    venue_order_id text COLLATE "C",
    side           text COLLATE "C",
    size           float8,
    price          float8,
    fee            float8,
    status         text COLLATE "C",
    reason         text,
    strategy       text COLLATE "C"
$cols$, 'executor, venue_order_id, ts, cloid, size, price', 'executor');

-- One equity row per signal: a strategy trading two symbols has two rows at the
-- same ts, so the key is the whole row (the same row twice is the same fact).
SELECT varon_create_timeseries('equity', $cols$
    executor  text COLLATE "C" NOT NULL,
    ts        timestamptz NOT NULL,
    strategy  text COLLATE "C" NOT NULL,
    equity    float8,
    position  float8,
    pnl       float8,
    drawdown  float8
$cols$, 'executor, strategy, ts, equity, position, pnl, drawdown', 'executor, strategy');

CREATE TABLE IF NOT EXISTS positions (
    executor    text COLLATE "C" NOT NULL,
    strategy    text COLLATE "C" NOT NULL,
    symbol      text COLLATE "C" NOT NULL,
    size        float8 NOT NULL,
    entry       float8,
    stop_loss   float8,
    take_profit float8,
    leverage    float8,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (executor, strategy, symbol)
);

-- An order intent is recorded before its order is sent (DESIGN principle 7).
CREATE TABLE IF NOT EXISTS order_intents (
    executor   text COLLATE "C" NOT NULL,
    cloid      text COLLATE "C" PRIMARY KEY,
    strategy   text COLLATE "C" NOT NULL,
    symbol     text COLLATE "C" NOT NULL,
    bar_ts     timestamptz,
    side       text COLLATE "C" NOT NULL,
    size       float8 NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS strategies (
    name       text COLLATE "C" PRIMARY KEY,
    kind       text NOT NULL,              -- rule or model
    config     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS models (
    model_id     text COLLATE "C" PRIMARY KEY,
    algo         text NOT NULL,
    path         text,
    feature_hash text,
    metrics      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
