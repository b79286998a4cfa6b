"""Fixtures of the agent tests that live with the tests of what they exercise."""

from tests.inference.outbound_helpers import dns  # noqa: F401 - a resolver the test answers for itself
