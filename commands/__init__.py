"""The `varon` command line: one thin module per command."""
