"""adaptwin.figures (see module docstrings)."""
