"""Live market-data feeds: venue declarations, frame normalisers, sessions, captures."""
