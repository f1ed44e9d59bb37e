// der::Options: how a Predictor opens its engine (backend and its settings) and feeds it (batches, decoding).
// Shared by predictor.hpp and runner.hpp (open_runner); values are checked when the engine is opened, and a value
// that does not apply to the backend that runs (e.g. mode with ONNX Runtime) is an error, never ignored.
#pragma once

#include <string>
#include <vector>

#include "der/image.hpp"

namespace der {

struct Options {
  std::string backend = "auto";             // auto (by suffix) | ort | trt | openvino (CPU, .onnx)
  std::string precision;                     // openvino only: "" (= fp32) | fp32 | bf16 | fp16; never downgraded
  std::string mode = "latency";              // openvino only: latency (one infer request) | throughput (each batch
                                             // split over OpenVINO's optimal number of requests, run concurrently)
  std::string cache_dir;                     // openvino only: compiled-model cache folder (CACHE_DIR); "": none
  int device = 0;                            // GPU index for TensorRT and ONNX Runtime's CUDA provider; >= 0
  std::vector<std::string> providers{"cpu"};  // ONNX Runtime providers in priority order: {"cpu"} or {"cuda","cpu"}
  int intra_op_threads = 0;                  // ONNX Runtime intra-op / OpenVINO inference threads; 0: the runtime's
  int batch_size = 8;                        // images per engine call (split further above the engine's maximum)
  int decode_threads = -1;                   // decode+preprocess threads; -1: min(4, cores), 0: decode inline
  long long max_pixels = kDefaultMaxPixels;  // larger images are an error record (image.hpp); 0: no limit
};

}  // namespace der
