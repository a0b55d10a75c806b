-- 0001: how a time-series table is made, and its monthly partitions.
--
-- Every statement here is safe to re-run (CREATE OR REPLACE), as in every migration.
--
-- With the timescaledb extension (installed in this database, or available and
-- creatable), a time-series table is a hypertable with compression and, where
-- asked, a retention policy. Without it, the table is natively RANGE-partitioned
-- on ts: one partition per UTC month, created on demand by `varon db load`
-- (varon_ensure_partitions), plus a DEFAULT partition for rows that arrive by
-- any other route. Only the native path is exercised by the tests (the test
-- server has no timescaledb); the hypertable path is written, not tested.

CREATE OR REPLACE FUNCTION varon_use_timescaledb() RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RETURN false;
    END IF;
    BEGIN
        -- Needs shared_preload_libraries = 'timescaledb' and the right to create extensions.
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        RETURN true;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'timescaledb is available but cannot be created here (%); using native partitioning', SQLERRM;
        RETURN false;
    END;
END
$fn$;

-- Create the time-series table `tbl` (columns given as DDL text, a `ts` column
-- among them) with UNIQUE NULLS NOT DISTINCT (key): the key `varon db load`
-- relies on to add nothing when the same rows come again. Does nothing when the
-- table exists.
CREATE OR REPLACE FUNCTION varon_create_timeseries(
    tbl text, columns text, key text, segment_by text,
    compress_after interval DEFAULT interval '7 days',
    drop_after interval DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF to_regclass(tbl) IS NOT NULL THEN
        RETURN;
    END IF;
    IF varon_use_timescaledb() THEN
        EXECUTE format('CREATE TABLE %I (%s, UNIQUE NULLS NOT DISTINCT (%s))', tbl, columns, key);
        PERFORM create_hypertable(tbl::regclass, 'ts', chunk_time_interval => interval '7 days', if_not_exists => true);
        EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                       'timescaledb.compress_orderby = %L)', tbl, segment_by, 'ts');
        PERFORM add_compression_policy(tbl::regclass, compress_after, if_not_exists => true);
        IF drop_after IS NOT NULL THEN
            PERFORM add_retention_policy(tbl::regclass, drop_after, if_not_exists => true);
        END IF;
    ELSE
        EXECUTE format('CREATE TABLE %I (%s, UNIQUE NULLS NOT DISTINCT (%s)) PARTITION BY RANGE (ts)', tbl, columns, key);
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    END IF;
END
$fn$;

-- Make sure the natively partitioned table `tbl` has a partition for the UTC
-- month of each of `stamps` (named tbl_pYYYYMM); returns how many it created.
-- Rows of that month already in the DEFAULT partition move into the new one.
-- A hypertable (not natively partitioned) needs nothing: returns 0.
CREATE OR REPLACE FUNCTION varon_ensure_partitions(tbl regclass, stamps timestamptz[]) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    parent text;
    dflt text;
    part text;
    month timestamptz;
    month_end timestamptz;
    stranded boolean;
    created integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = tbl) THEN
        RETURN 0;
    END IF;
    SELECT relname INTO parent FROM pg_class WHERE oid = tbl;
    dflt := parent || '_default';
    FOR month IN SELECT DISTINCT date_trunc('month', s, 'UTC') FROM unnest(stamps) AS s WHERE s IS NOT NULL ORDER BY 1 LOOP
        part := format('%s_p%s', parent, to_char(month AT TIME ZONE 'UTC', 'YYYYMM'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        PERFORM pg_advisory_xact_lock(tbl::oid::bigint);  -- one creator per table at a time
        CONTINUE WHEN to_regclass(part) IS NOT NULL;      -- made by another loader while we waited
        month_end := month + interval '1 month';
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE ts >= $1 AND ts < $2)', dflt)
            INTO stranded USING month, month_end;
        IF stranded THEN
            -- A new partition cannot be created while the DEFAULT partition holds rows of its range.
            EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, dflt);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, parent, month, month_end);
            EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= $1 AND ts < $2 RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', dflt, parent) USING month, month_end;
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I DEFAULT', parent, dflt);
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, parent, month, month_end);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;
