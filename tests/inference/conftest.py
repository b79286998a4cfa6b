"""Fixtures shared by the serving tests: a resolver and an upstream the outbound tests answer for themselves."""

from tests.inference.outbound_helpers import dns, upstream  # noqa: F401 - fixtures of the outbound tests
