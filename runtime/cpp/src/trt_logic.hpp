// The TensorRT runner's decisions, apart from every TensorRT and CUDA call (trt_runner.cpp makes those): input
// shapes from the profile, output sizes from the execution context, the library version string, the plan hash,
// the device index, the captured log. Compiled into every build so it is tested without a GPU or TensorRT.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "der/runner.hpp"
#include "der/sidecar.hpp"

namespace der {

namespace trt {

using Shape = std::vector<std::int64_t>;  // -1 for a dynamic dimension, as nvinfer1::Dims

// The shape to give setInputShape for `batch` images (runtime/tensorrt.py's _set_input_shapes): dimension 0 is
// the batch, every other dynamic dimension the profile's maximum, fixed ones stay. EngineError for a batch
// outside the profile or an engine/profile rank mismatch.
Shape input_shape(const Shape& engine, const Shape& profile_min, const Shape& profile_max, std::int64_t batch,
                  const std::string& tensor, const std::string& plan);

// Elements of an output shape the execution context reports after setInputShape; EngineError when a dimension
// is still dynamic or the batch is not `batch` (a buffer sized from it would be wrong).
std::size_t output_elements(const Shape& shape, std::int64_t batch, const std::string& tensor, const std::string& plan);

// Elements of a fully known shape (no -1); EngineError naming the tensor otherwise.
std::size_t elements(const Shape& shape, const std::string& tensor, const std::string& plan);

// The running library's version, from getInferLibMajor/Minor/Patch/BuildVersion() at run time.
struct LibVersion {
  int major = 0, minor = 0, patch = 0, build = 0;
};

// The version to compare with the sidecar's (Python's trt.__version__: "10.3.0" or "10.3.0.26"): the recorded
// three-part form when it is this library's, else the four-part form with this library's build number.
std::string library_version(const std::string& recorded, const LibVersion& lib);

// Lower-case hex SHA-256 (FIPS 180-4) of `size` bytes.
std::string sha256_hex(const void* data, std::size_t size);

// EngineError when the sidecar records the plan's SHA-256 and `plan` (the file's bytes) differs
// (runtime/tensorrt.py refuses the same way); no recorded hash is not checked.
void check_plan_hash(const Sidecar& sidecar, const std::vector<char>& plan, const std::string& plan_path);

// `device` when 0 <= device < count; EngineError for a negative index, BackendUnavailable for one this machine
// lacks (count 0: no usable GPU).
int check_device(int device, int count);

// Index of `name` among the outputs; EngineError ("has no output ...") before anything runs.
std::size_t find_output(const std::vector<TensorInfo>& outputs, const std::string& name, const std::string& plan);

// The log TensorRT writes to (one per process: TensorRT keeps the first logger it is given as its global one).
// Errors and warnings are kept; reset() starts each operation that may quote it, so a failure never quotes an
// earlier call's message. Thread-safe: TensorRT may log from several threads.
class LogCapture {
 public:
  // nvinfer1::ILogger::Severity's values (trt_runner.cpp checks them with static_assert).
  enum Severity : int { kInternalError = 0, kError = 1, kWarning = 2, kInfo = 3, kVerbose = 4 };

  void log(int severity, const char* msg);
  void reset();
  // The last 5 errors, or without errors the last 3 warnings (e.g. "CUDA initialization failure with error: 35"
  // is only a warning), joined by " | " on one line; "TensorRT reported no error" when empty.
  std::string summary() const;
  // Whether the summary reports CUDA error 35 (cudaErrorInsufficientDriver: the driver is older than the CUDA
  // this TensorRT was built for).
  bool driver_too_old() const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> errors_, warnings_;
};

}  // namespace trt
}  // namespace der
