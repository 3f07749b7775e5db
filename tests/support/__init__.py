"""Test-only builders (not part of the installed package)."""
