"""Database tests log in several devices; see tests/presence/devices.py."""
