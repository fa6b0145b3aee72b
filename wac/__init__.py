"""wac: the command line, configuration and the generated API (wac.v1)."""
