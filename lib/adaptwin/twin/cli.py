"""``adaptwin simulate SCENARIO.yaml [--calibration PATH] [--json] [--extrapolate]``: print one JSON object.

Exit codes (the contract of `adaptwin.cli`): 0 on success; 2 with one line on stderr naming the file, field
and value for an invalid scenario, a setting vLLM refuses, a rank beyond the calibration (unless
``--extrapolate``) or an unusable calibration file."""

from __future__ import annotations

import argparse
import json

from adaptwin.calibration.costs import Calibration, load_calibration
from adaptwin.errors import UsageError, user_mistakes_exit_2
from adaptwin.io import dumps_json
from adaptwin.paths import from_cwd
from adaptwin.twin.api import simulate
from adaptwin.twin.scenario import ScenarioError, calibration_path, load_scenario_file, parse_scenario


@user_mistakes_exit_2("simulate")
def run_simulate(args: argparse.Namespace) -> int:
    """Run one scenario file and print its outputs (pretty canonical JSON, or one line with --json)."""
    path = from_cwd(args.scenario)
    calibration = load_calibration(from_cwd(args.calibration)) if args.calibration else None
    try:
        scenario = load_scenario_file(path)
        sc = parse_scenario(scenario, check_model=calibration is None)
    except ScenarioError as exc:
        text = str(exc)
        raise ScenarioError(text if str(path) in text else f"{path}: {text}") from None
    calibration = calibration or load_calibration(calibration_path(sc.model))
    check_server(str(path), sc.server.max_lora_rank, calibration, args.extrapolate)
    result = simulate(scenario, calibration)
    if args.json:
        print(json.dumps(result, sort_keys=True, separators=(",", ":")))
    else:
        print(dumps_json(result), end="")
    return 0


def check_server(source: str, max_lora_rank: int, calibration: Calibration, extrapolate: bool) -> None:
    """Refuse a ``max_lora_rank`` vLLM would not start with, or one beyond the calibrated ranks (the twin's
    costs there are extrapolated) unless ``extrapolate``."""
    from adaptwin.vllm_limits import calibrated_problem, rank_problem

    problem = rank_problem(max_lora_rank)
    if problem is None and not extrapolate:
        problem = calibrated_problem(max_lora_rank, max(calibration.loading_ms))
    if problem:
        raise UsageError(f"{source}: field server.max_lora_rank: {problem}")
