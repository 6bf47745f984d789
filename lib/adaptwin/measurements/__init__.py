"""adaptwin.measurements (see module docstrings)."""
