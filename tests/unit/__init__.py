"""Unit tests of the pure rules: no server, no clock, no I/O."""
