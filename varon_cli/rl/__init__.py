"""Reinforcement learning for `varon train`: trading environments and value-based agents."""
