"""adaptwin.twin: the Digital Twin of one vLLM 0.8.5 server serving many LoRA adapters.

`simulate(scenario, calibration=None, *, timeseries=False)` is the entry point (see `api`); the engine and
its named invariants are described in `engine`, the scheduling policy in `scheduler`, the scenario format
in `scenario`.
"""

from adaptwin.calibration.costs import Calibration, CalibrationError, load_calibration
from adaptwin.twin.api import simulate
from adaptwin.twin.scenario import ScenarioError, load_scenario_file, parse_scenario

__all__ = [
    "Calibration",
    "CalibrationError",
    "ScenarioError",
    "load_calibration",
    "load_scenario_file",
    "parse_scenario",
    "simulate",
]
