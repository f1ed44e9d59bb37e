// Backend runners, after Polygraphy (and runtime/base.py): activate() loads, infer() runs one batch,
// deactivate() releases. infer() may be called from several threads at once (see predictor.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "der/card.hpp"
#include "der/error.hpp"
#include "der/export.h"
#include "der/options.hpp"

namespace der {

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;  // -1 for a dynamic dimension
};

class DER_API Runner {
 public:
  explicit Runner(std::string name) : name_(std::move(name)) {}
  virtual ~Runner() = default;

  void activate();
  void deactivate();
  bool is_active() const { return active_; }
  const std::string& name() const { return name_; }

  // One batch of n images (n, 3, H, W) -> n * C floats of the named output ("scores" or "logits").
  // n must lie within [min_batch(), max_batch()] (the Predictor splits and pads).
  std::vector<float> infer(const float* nchw, std::size_t n, const std::string& output) const;

  virtual std::vector<TensorInfo> inputs() const = 0;
  virtual std::vector<TensorInfo> outputs() const = 0;
  virtual std::size_t max_batch() const { return 0; }  // 0: unbounded
  virtual std::size_t min_batch() const { return 1; }  // > 1 only for a fixed batch dimension
  // The model card stored with the engine (ONNX metadata_props / TensorRT sidecar).
  virtual Card card() const = 0;
  // What actually runs, read back from the engine once active (OpenVINO: version, devices, precision, performance
  // hint, requests, cache hit); "" if the backend has nothing beyond its name to report.
  virtual std::string description() const { return ""; }

 protected:
  virtual void activate_impl() = 0;
  virtual void deactivate_impl() = 0;
  virtual std::vector<float> infer_impl(const float* nchw, std::size_t n, const std::string& output) const = 0;

 private:
  std::string name_;
  bool active_ = false;
};

// ONNX Runtime through its official C++ API. providers: "cpu", "cuda" (short names) or full ORT names; a
// requested provider this ONNX Runtime build lacks is BackendUnavailable, never a silent CPU fallback. device: the
// GPU of the CUDA provider.
DER_API std::unique_ptr<Runner> make_ort_runner(const std::string& onnx_path,
                                                const std::vector<std::string>& providers, int intra_op_threads,
                                                int device = 0);
// TensorRT on CUDA device `device` (only when built with DER_WITH_TENSORRT; otherwise throws BackendUnavailable).
// A device this machine lacks is BackendUnavailable at activate(), a negative one an EngineError.
DER_API std::unique_ptr<Runner> make_trt_runner(const std::string& plan_path, int device = 0);
// Whether this build includes the TensorRT backend.
DER_API bool has_tensorrt();
// OpenVINO on the CPU (only when built with DER_WITH_OPENVINO; otherwise throws BackendUnavailable).
// precision: "" or "fp32", "bf16", "fp16" (its inference precision hint); one the CPU lacks natively, or one
// the compiled model does not confirm, is BackendUnavailable at activate(), never a silent FP32 run.
// mode: "latency" (PERFORMANCE_HINT LATENCY, one request per call) or "throughput" (PERFORMANCE_HINT THROUGHPUT:
// each batch split over OPTIMAL_NUMBER_OF_INFER_REQUESTS requests run concurrently, results in input order).
// cache_dir: OpenVINO's compiled-model cache (CACHE_DIR, created when missing); "" for none.
DER_API std::unique_ptr<Runner> make_ov_runner(const std::string& onnx_path, const std::string& precision,
                                               int inference_threads, const std::string& mode = "latency",
                                               const std::string& cache_dir = "");
// Whether this build includes the OpenVINO backend.
DER_API bool has_openvino();

// "onnx" or "tensorrt" from the suffix; EngineError for an unknown suffix or a missing file (runtime/artifacts.py).
DER_API std::string engine_kind(const std::string& path);
// An inactive runner for `path` with the backend settings of `options` (backend "auto" picks by suffix,
// "ort"/"trt"/"openvino" insist). An unknown value (backend, precision, mode), a negative device, or a setting
// the chosen backend does not have (precision, mode or cache_dir without openvino; providers other than cpu
// with TensorRT or OpenVINO; a device other than 0 on the CPU) is an Error in one line.
DER_API std::unique_ptr<Runner> open_runner(const std::string& path, const Options& options);

}  // namespace der
