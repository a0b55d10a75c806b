-- 0010: the executor's saved state in the database, so `varon execute` can be
-- rebuilt on a machine that has lost its state directory
-- (varon_cli/execution/dbstore.py). `state` is the state directory's JSON
-- verbatim (Python's dialect: NaN and infinities included, which jsonb would
-- refuse), `audit_seq` the audit record it was saved after.

CREATE TABLE IF NOT EXISTS executor_state (
    executor   text COLLATE "C" PRIMARY KEY,
    venue      text NOT NULL,
    audit_seq  bigint NOT NULL,
    state      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
