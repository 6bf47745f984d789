"""adaptwin: serve many LoRA adapters on as few GPUs as possible.

Pipeline, one package per box, data flowing one way (``tests/test_layers.py`` checks every import):
measurements -> calibration -> twin -> runner/sweep -> validation -> dataset -> surrogate -> placement ->
report; on top, the figures, the command line, the notebook runner and the vLLM profiling harness.
The reading guide is ``docs/architecture.md``.
"""

__version__ = "0.1.0"
