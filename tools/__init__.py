"""Test and benchmark tooling: the process launcher and the benchmark programs.

Not a product package: it is not installed, not shipped in the image, and nothing under agents/,
chatsite/, inference/ or sessions_app/ imports it.
"""
