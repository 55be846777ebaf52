"""Helpers shared by the test packages (plain functions, importable from any conftest)."""
