"""Rank tiles: each adapter in a step costs more when its slots are sized for S_max 32 than for 8 or 16
(vLLM 0.8.5's LoRA kernels tile the slot rank by 16; the calibration's ``rank_tile_adapter``)."""

from __future__ import annotations

import pytest
from twin_helpers import fixture_calibration, scenario

from adaptwin.calibration.costs import RANK_TILE, rank_tiles
from adaptwin.io import dumps_json
from adaptwin.twin import simulate

SLOTS = {"launch": 0.002, "distinct_adapters": 3.5e-4, "slots": 3.5e-5, "tokens": 5e-6}


def slots_form(tile_s: float | None):
    def edit(data: dict) -> None:
        data["lora"] = {"form": "slots", "params": {**SLOTS, **({} if tile_s is None else
                                                               {"rank_tile_adapter": tile_s})}}
    return edit


def test_rank_tiles_of_a_slot():
    assert RANK_TILE == 16
    assert [rank_tiles(s) for s in (8, 16, 32, 64)] == [0, 0, 1, 3]


def test_tile_cost_is_charged_per_adapter_and_only_beyond_the_first_tile(tmp_path):
    _, cal = fixture_calibration(tmp_path, slots_form(0.0002))
    for distinct in (1, 7, 30):
        at16 = cal.for_server(32, 16).step_time(100, 0, 20_000, distinct)
        at32 = cal.for_server(32, 32).step_time(100, 0, 20_000, distinct)
        assert at32 - at16 == pytest.approx(0.0002 * distinct, rel=1e-9)
        assert cal.for_server(32, 8).step_time(100, 0, 20_000, distinct) == at16
    assert cal.for_server(32, 32).step_time(100, 0, 20_000, 0) == cal.for_server(32, 16).step_time(100, 0, 20_000, 0)


def test_older_calibrations_without_the_term_keep_their_twin(tmp_path):
    """No ``rank_tile_adapter`` key (every calibration written before it): S_max 32 costs what it did."""
    _, old = fixture_calibration(tmp_path, slots_form(None), "old.json")
    _, zero = fixture_calibration(tmp_path, slots_form(0.0), "zero.json")
    sc = scenario(max_loras=8, served=24, duration=120.0)
    sc["server"]["max_lora_rank"] = 32
    assert dumps_json(simulate(sc, old, zero_wall_time=True)) == dumps_json(simulate(sc, zero, zero_wall_time=True))


def test_the_engine_binds_the_servers_s_max(tmp_path):
    """The same S_max 32 server is slower with the tile cost; an S_max 16 one is byte-identical."""
    _, plain = fixture_calibration(tmp_path, slots_form(0.0), "plain.json")
    _, tiled = fixture_calibration(tmp_path, slots_form(0.001), "tiled.json")
    sc = scenario(max_loras=8, served=24, duration=120.0)
    assert dumps_json(simulate(sc, plain, zero_wall_time=True)) == dumps_json(simulate(sc, tiled, zero_wall_time=True))
    sc["server"]["max_lora_rank"] = 32
    assert simulate(sc, tiled)["itl_mean_ms"] > simulate(sc, plain)["itl_mean_ms"]
