"""The store behind `varon db`: PostgreSQL for a server, DuckDB embedded.

Modules, each small: `dsn` (which store, redacted for messages), `tables`
(the tables that hold each stream kind, and their keys), `migrate` (the plain
SQL files in sql/), `pgcopy` (PostgreSQL's binary COPY format with numpy),
`connect` (connections with retries), `load`, `export` and `audit`.
Importing this package imports no database driver; each command loads the one
it needs.
"""
