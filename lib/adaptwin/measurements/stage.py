"""The ``measurements`` stage (notebook 01): its knobs, from the ``measurements:`` section of params.yaml.

The stage either ingests the recorded corpus (`adaptwin.measurements.ingest`) or profiles a live vLLM server
(`adaptwin.profiling`, GPU); the notebook picks one by ``backend``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adaptwin.params import config_from_section

#: replay: ingest ../shared/vllm-measurements | vllm: run the profiling harness (GPU)
BACKENDS: tuple[str, ...] = ("replay", "vllm")


@dataclass(frozen=True)
class MeasurementsConfig:
    """The ``measurements:`` section of params.yaml."""

    backend: str = field(default="replay", metadata={"choices": BACKENDS})
    profiling_config: str = "profiling/example.yaml"  # used only by the vllm backend

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> MeasurementsConfig:
        """The config of a params.yaml ``measurements:`` section; an unknown key or a bad value raises a
        ValueError naming it."""
        return config_from_section(cls, section, "measurements")
