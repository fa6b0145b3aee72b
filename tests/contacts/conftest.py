"""Contacts tests run against a real core; see devices.py for the helpers."""
