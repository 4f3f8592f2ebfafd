"""Helpers shared by the unit and integration tests (no test lives here)."""
