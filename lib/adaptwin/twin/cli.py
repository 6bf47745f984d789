"""``adaptwin simulate SCENARIO.yaml [--calibration PATH] [--json]``: print one JSON object.

Exit codes: 0 on success; 2 with one line on stderr naming the field and value for an invalid scenario or
an unusable calibration file."""

from __future__ import annotations

import argparse
import json
import sys

from adaptwin.io import dumps_json
from adaptwin.twin.api import simulate
from adaptwin.twin.costs import CalibrationError, load_calibration
from adaptwin.twin.scenario import ScenarioError, load_scenario_file


def run_simulate(args: argparse.Namespace) -> int:
    """Run one scenario file and print its outputs (pretty canonical JSON, or one line with --json)."""
    try:
        scenario = load_scenario_file(args.scenario)
        calibration = load_calibration(args.calibration) if args.calibration else None
        result = simulate(scenario, calibration)
    except (ScenarioError, CalibrationError) as exc:
        print(f"adaptwin simulate: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True, separators=(",", ":")))
    else:
        print(dumps_json(result), end="")
    return 0
