"""Where the recorded corpus is, for the tests that read it in place (../shared, `paths.shared`)."""

from adaptwin.params import shared_dir

SOURCE = shared_dir() / "vllm-measurements"
DTD = "digital_twin_dynamic/estimators/"
DEF = "benchmarks/lora/definitive_results/"
