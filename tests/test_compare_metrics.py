"""`tools/compare_metrics.py`: the check that a refactor leaves the pipeline's numbers unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from compare_metrics import differences, main  # noqa: E402


def test_timings_are_ignored_and_any_other_change_is_named():
    before = {"heldout": {"throughput_smape_pct": 4.2, "train_time_s": 1.0}, "speedup": [10.0], "n": 3}
    after = {"heldout": {"throughput_smape_pct": 4.3, "train_time_s": 9.0}, "speedup": [99.0], "n": 3, "x": 1}
    assert differences(before, after) == [".x: only in after", ".heldout.throughput_smape_pct: 4.2 -> 4.3"]
    assert differences(before, before) == []


def test_exit_status_says_whether_the_numbers_changed(tmp_path, capsys):
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.json").write_text(json.dumps({"v": value, "wall_time_s": value}))
    assert main([str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert ".v: 1.0 -> 2.0" in capsys.readouterr().out
