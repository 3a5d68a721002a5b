"""Calibration sets for post-training INT8 quantization."""
