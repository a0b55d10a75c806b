"""varon: composable commands for machine-learning crypto trading.

The library lives here; `commands/` holds one thin CLI module per command.
"""

__version__ = "0.1.0"
