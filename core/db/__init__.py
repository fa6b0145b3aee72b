"""The SQL database every store shares: engine, metadata and migrations."""
