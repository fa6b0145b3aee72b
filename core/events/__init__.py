"""Per-session event logs, live devices, and the EventsService stream."""
