"""adaptwin.twin (see module docstrings)."""
