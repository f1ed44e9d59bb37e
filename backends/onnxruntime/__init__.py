"""ONNX Runtime backend: runs the ``.onnx`` files der-export writes (FP32, FP16, INT8 Q/DQ) unchanged."""
