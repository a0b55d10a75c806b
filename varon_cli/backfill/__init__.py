"""Historical candles and funding over REST: resumable, rate-limited backfills."""
