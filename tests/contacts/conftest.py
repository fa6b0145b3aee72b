"""Contacts tests run against a real core; see devices.py for the helpers."""

from tests.presence.devices import cheap_password_hashing

__all__ = ["cheap_password_hashing"]
