"""Measurement tools over every stage: ``evaluate`` (der-eval: mAP and parity against the PyTorch checkpoint)
and ``bench`` / ``bench_worker`` (der-bench). They import the exporter and torch, so they sit above the
torch-free runtime and never inside it."""
