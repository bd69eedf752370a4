"""Helpers of the tests that are not fixtures (the fixtures are in tests/conftest.py)."""
