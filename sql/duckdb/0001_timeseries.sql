-- 0001 (DuckDB): nothing to define. The PostgreSQL migration defines the
-- partitioning helpers; DuckDB has no partitioning, no triggers and no
-- procedural language, so its time-series tables are plain tables. The version
-- exists so both stores count migrations the same way.
SELECT 1;
