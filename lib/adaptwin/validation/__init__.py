"""adaptwin.validation: the twin against real serving runs (notebook 03, ``data/metrics/twin_validation.json``).

`runs` simulates each real run's configuration and scores the twin on it (the rules are `adaptwin.rules`);
`forms` scores the calibration's candidate LoRA cost forms the same way, holding out whole configurations.
It sits after the twin in the pipeline: it imports the twin and the calibration, and nothing before it
imports it.
"""
