"""adaptwin.profiling (see module docstrings)."""
