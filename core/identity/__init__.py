"""Identity (IdM): subscribers, passwords, sessions, tokens and API keys."""
