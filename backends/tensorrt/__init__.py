"""TensorRT backend: ``builder`` turns ONNX into a plan + ``<plan>.json`` sidecar, ``runner`` executes it,
``cuda`` holds the cuda-python calls both need. ``tensorrt`` and ``cuda-python`` are imported lazily."""
