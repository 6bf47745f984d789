"""adaptwin.calibration: the twin's cost model (`costs`) and how it is fitted from profiling runs (`fit`).

The package itself imports nothing: the twin reads `adaptwin.calibration.costs` without loading the fitting
code (polars, scipy, the measurement tables), and a stage that only simulates does not depend on how the
costs were fitted.
"""
