"""Failures of the store, each reported as one line (never with a DSN's password)."""

from __future__ import annotations

from varon_cli.errors import VaronError


class DbError(VaronError):
    """A database refused or failed what was asked (bad SQL state, a constraint, a missing table)."""

    exit_code = 1


class DbUnavailable(DbError):
    """The database cannot be reached, or went away, and retrying did not help."""

    exit_code = 69  # EX_UNAVAILABLE


class MigrationError(DbError):
    """The migrations in sql/ and the ones recorded in the database disagree."""

    exit_code = 65  # EX_DATAERR
