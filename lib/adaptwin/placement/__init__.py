"""adaptwin.placement (see module docstrings)."""
