-- 0004 (DuckDB): the audit log table of sql/0004_audit_log.sql. DuckDB has no
-- triggers, so here nothing stops an UPDATE or DELETE: the hash chain, which
-- `varon db verify-audit` checks, still shows where a row was changed.

CREATE TABLE IF NOT EXISTS audit_log (
    executor VARCHAR NOT NULL,
    seq      BIGINT NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    kind     VARCHAR NOT NULL,
    record   JSON NOT NULL,
    line     VARCHAR NOT NULL,
    prev     VARCHAR NOT NULL,
    hash     VARCHAR NOT NULL,
    PRIMARY KEY (executor, seq)
);
