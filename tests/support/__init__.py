"""Test support: real servers and stand-ins that tests and benches start."""
