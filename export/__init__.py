"""Export stage: fold the DER head, write and verify ONNX (FP32/FP16/INT8), build TensorRT engines."""
