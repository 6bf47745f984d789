"""adaptwin.calibration (see module docstrings)."""
