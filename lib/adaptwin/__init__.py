"""adaptwin: serve many LoRA adapters on as few GPUs as possible.

Pipeline, one module per box, data flowing one way:
measurements -> profiling -> calibration -> twin -> dataset/sweep -> surrogate -> placement -> figures/report.
"""

__version__ = "0.1.0"
