"""adaptwin.measurements: ingest of the recorded vLLM measurements (data card ../shared/vllm-measurements).

``ingest(source_dir, out_dir) -> IngestReport`` writes the tables documented in
:mod:`adaptwin.measurements.schema` as ``<out_dir>/<table>.parquet``;
``read_table(directory, table)`` reads one back, checked against the schema. Modules: ``families`` (folder layout),
``parse`` (text formats), ``series`` (time series repairs), ``runs`` (one run folder), ``corpus`` (the whole corpus), ``cli``.
"""

from adaptwin.measurements.corpus import IngestReport, IngestWarning, ingest, read_table

__all__ = ["IngestReport", "IngestWarning", "ingest", "read_table"]
