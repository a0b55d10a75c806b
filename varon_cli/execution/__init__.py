"""The executor: its kernel, and the state directory, audit log and kill switch that keep it safe to run."""
