"""Strategies: features in, a target per symbol per bar out (the same code in backtests and live)."""
