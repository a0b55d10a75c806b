"""The Hyperliquid perpetuals venue: credentials, rounding, the signed client, the user stream, the adapter."""
