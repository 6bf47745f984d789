"""adaptwin.dataset (see module docstrings)."""
