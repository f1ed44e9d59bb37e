"""Torch-free runtime: backend runners, the Predictor, evaluation and benchmarks."""
