"""adaptwin.surrogate (see module docstrings)."""
