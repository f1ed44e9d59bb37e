"""OpenVINO backend (Intel CPUs: BF16 / INT8 on AMX, AVX-512 VNNI): runs der-export's ONNX files unchanged.

- ``runner``: :class:`OpenVinoRunner` (precision hint checked against what was compiled, latency / throughput
  modes, model cache); ``openvino`` itself is imported only on ``activate()``.
- ``core``: the process's one ``openvino.Core`` (one CPU plugin per process: see there why).
- ``cpu``: CPU features from /proc/cpuinfo and OpenVINO's capabilities -> which precisions are native here.
"""
