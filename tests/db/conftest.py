"""Database tests log in several devices; see tests/presence/devices.py."""

from tests.presence.devices import cheap_password_hashing

__all__ = ["cheap_password_hashing"]
