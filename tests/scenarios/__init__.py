"""Scenarios shared by unit tests (reference backends) and integration tests (real servers)."""
