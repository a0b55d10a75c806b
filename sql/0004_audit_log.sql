-- 0004: the executors' audit logs (varon_cli/execution/audit.py), append-only.
--
-- One row per JSONL record. `line` is the record's exact bytes: `prev` is the
-- SHA-256 of the previous line's bytes, which jsonb (it reorders keys) cannot
-- give back, so `varon db verify-audit` recomputes the chain from `line`,
-- and checks that `record` and the other columns say what `line` says.
-- Triggers refuse UPDATE, DELETE and TRUNCATE, so rewriting history needs a
-- superuser to disable them first, and the chain then shows where.

CREATE TABLE IF NOT EXISTS audit_log (
    executor text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    ts       timestamptz NOT NULL,
    kind     text COLLATE "C" NOT NULL,
    record   jsonb NOT NULL,
    line     text NOT NULL,
    prev     text NOT NULL,
    hash     text NOT NULL,
    PRIMARY KEY (executor, seq)
);

CREATE OR REPLACE FUNCTION varon_audit_log_refuse() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;

CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION varon_audit_log_refuse();

CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION varon_audit_log_refuse();
