"""adaptwin.profiling: the ``vllm`` measurement backend, a live server driven like the recorded corpus.

Measure a live vLLM server the way the recorded corpus was measured and write the same ``runs``,
``timeseries`` and ``kv_capacity`` tables as the replay ingest (``adaptwin.measurements``):

* ``adapters``   -- dummy zero-weight LoRA adapters of any rank (PEFT config + safetensors);
* ``server``     -- the ``vllm serve`` command line, start/readiness/stop, environment check;
* ``client``     -- streaming OpenAI completions client, Poisson schedules (by-time, fixed-count);
* ``prometheus`` -- Prometheus text-format parser (scientific notation!) and the ``/metrics`` poller;
* ``runner``     -- one run end to end and the benchmark's summary statistics;
* ``writers``    -- rows of ``runs``/``timeseries``/``kv_capacity`` (columns from the schema module);
* ``config``     -- the YAML config (``profiling/example.yaml``) and its grid of runs;
* ``cli``        -- ``adaptwin profile CONFIG --out DIR`` and ``run_from_config`` (notebook 01);
* ``fake``       -- a loopback fake OpenAI-compatible server for tests and dry runs.

Only ``server`` needs vLLM and a GPU; everything else runs on a CPU.
"""

from adaptwin.profiling.cli import ProfileReport, run_from_config
from adaptwin.profiling.server import ProfilingUnavailable

__all__ = ["ProfileReport", "ProfilingUnavailable", "run_from_config"]
