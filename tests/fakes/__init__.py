"""Local fake exchange servers that speak the real protocols and misbehave on request."""
