"""Test support: real servers started and stopped by the tests."""
