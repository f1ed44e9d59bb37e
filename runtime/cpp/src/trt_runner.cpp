// TensorRT 10/11 runner (compiled only with DER_WITH_TENSORRT): NvInfer IRuntime / ICudaEngine /
// IExecutionContext, name-based I/O, setInputShape + setTensorAddress + enqueueV3 on one CUDA stream.
// Mirrors runtime/tensorrt.py: the .plan.json sidecar carries the card and is checked (TensorRT version,
// compute capability, the plan's SHA-256) before the plan is deserialised. Every decision (shapes, sizes,
// versions, hashes, the device index, the log) is in trt_logic.cpp, tested without a GPU; this file only
// makes the TensorRT and CUDA calls. Checked against NVIDIA's public headers of TensorRT 10.x and 11.x.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include "der/runner.hpp"
#include "der/sidecar.hpp"
#include "trt_logic.hpp"

namespace der {
namespace {

using Sev = nvinfer1::ILogger::Severity;
static_assert(static_cast<int>(Sev::kINTERNAL_ERROR) == trt::LogCapture::kInternalError &&
                  static_cast<int>(Sev::kERROR) == trt::LogCapture::kError &&
                  static_cast<int>(Sev::kWARNING) == trt::LogCapture::kWarning,
              "TensorRT's ILogger severities changed; update trt::LogCapture");

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    try {
      capture.log(static_cast<int>(severity), msg);
    } catch (...) {  // log() is noexcept: losing one line beats terminating
    }
  }
  trt::LogCapture capture;
};

// One per process, never destroyed: TensorRT keeps the first logger it is given and may log until exit.
Logger& process_logger() {
  static Logger* logger = new Logger();
  return *logger;
}

void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess)
    throw EngineError(what + " failed (" + cudaGetErrorString(err) + "); check the GPU and driver with der-doctor");
}

trt::Shape from_dims(const nvinfer1::Dims& d) {
  return d.nbDims < 0 ? trt::Shape() : trt::Shape(d.d, d.d + d.nbDims);
}

nvinfer1::Dims to_dims(const trt::Shape& s) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<std::int32_t>(s.size());  // at most the engine's rank, so within MAX_DIMS
  for (std::size_t i = 0; i < s.size(); ++i) d.d[i] = s[i];
  return d;
}

// The running library's version, not the headers' NV_TENSORRT_* constants this file was compiled with.
trt::LibVersion lib_version() {
  return {getInferLibMajorVersion(), getInferLibMinorVersion(), getInferLibPatchVersion(), getInferLibBuildVersion()};
}

class TrtRunner final : public Runner {
 public:
  TrtRunner(std::string plan, int device) : Runner("tensorrt:" + plan), plan_(std::move(plan)), device_(device) {}
  ~TrtRunner() override { release(); }

  std::vector<TensorInfo> inputs() const override { return inputs_; }
  std::vector<TensorInfo> outputs() const override { return outputs_; }
  std::size_t max_batch() const override { return static_cast<std::size_t>(max_batch_); }
  std::size_t min_batch() const override { return static_cast<std::size_t>(min_batch_); }
  Card card() const override { return sidecar_.card; }

 protected:
  void activate_impl() override {
    try {
      activate_checked();
    } catch (...) {
      release();
      throw;
    }
  }
  void deactivate_impl() override { release(); }

  // One execution context: calls are serialised (the mutex is what makes a shared Predictor thread-safe).
  std::vector<float> infer_impl(const float* nchw, std::size_t n, const std::string& output) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    const TensorInfo& out = outputs_[trt::find_output(outputs_, output, plan_)];  // before anything runs
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");  // the current device is per thread
    trt::LogCapture& log = process_logger().capture;
    log.reset();  // quote this call's messages only
    const TensorInfo& in = inputs_[0];
    const auto batch = static_cast<std::int64_t>(n);
    set_input_shape(batch);
    const std::size_t in_count = trt::elements(trt::input_shape(in_engine_, in_min_, in_max_, batch, in.name, plan_),
                                               in.name, plan_);
    // Sizes from the context now that the input shape is set: a dynamic output dimension is resolved here.
    const std::size_t out_count =
        trt::output_elements(from_dims(context_->getTensorShape(out.name.c_str())), batch, out.name, plan_);
    if (in_count > capacity_.at(in.name) || out_count > capacity_.at(out.name))
      throw EngineError(plan_ + ": batch " + std::to_string(n) + " needs larger buffers than the profile's maximum; "
                        "rebuild it with der-export --trt");
    cuda_check(cudaMemcpyAsync(buffers_.at(in.name), nchw, in_count * sizeof(float), cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync");
    for (const auto& kv : buffers_)
      if (!context_->setTensorAddress(kv.first.c_str(), kv.second))
        throw EngineError(plan_ + ": TensorRT rejected the buffer of '" + kv.first + "' (" + log.summary() + ")");
    if (!context_->enqueueV3(stream_)) throw EngineError(plan_ + ": TensorRT inference failed (" + log.summary() + ")");
    std::vector<float> host(out_count);
    cuda_check(cudaMemcpyAsync(host.data(), buffers_.at(out.name), out_count * sizeof(float), cudaMemcpyDeviceToHost,
                               stream_), "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return host;
  }

 private:
  void set_input_shape(std::int64_t batch) const {
    const std::string& name = inputs_[0].name;
    const trt::Shape shape = trt::input_shape(in_engine_, in_min_, in_max_, batch, name, plan_);
    if (!context_->setInputShape(name.c_str(), to_dims(shape)))
      throw EngineError(plan_ + ": TensorRT refused batch " + std::to_string(batch) + " for '" + name + "' (" +
                        process_logger().capture.summary() + ")");
  }

  void activate_checked() {
    sidecar_ = read_sidecar(plan_);
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess)
      throw BackendUnavailable(std::string("no usable CUDA device (") + cudaGetErrorString(err) +
                               "); check the GPU and driver with der-doctor");
    trt::check_device(device_, count);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    const std::string version = trt::library_version(sidecar_.tensorrt_version, lib_version());
    for (const auto& w : check_compatible(sidecar_, version, prop.name, cc, plan_))
      std::fprintf(stderr, "warning: %s\n", w.c_str());

    std::ifstream f(plan_, std::ios::binary);
    const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (blob.empty())
      throw EngineError(plan_ + ": cannot read the plan (empty or unreadable); rebuild it with der-export --trt");
    trt::check_plan_hash(sidecar_, blob, plan_);

    Logger& logger = process_logger();
    logger.capture.reset();
    runtime_ = nvinfer1::createInferRuntime(logger);
    if (!runtime_) {
      const std::string said = logger.capture.summary();
      if (logger.capture.driver_too_old())
        throw BackendUnavailable("TensorRT could not create a runtime (" + said + "): the NVIDIA driver is too old for "
                                 "the CUDA this TensorRT was built for; upgrade the driver");
      throw BackendUnavailable("TensorRT could not create a runtime (" + said + "); check the driver with der-doctor");
    }
    engine_ = runtime_->deserializeCudaEngine(blob.data(), blob.size());
    const std::string onnx = sidecar_.onnx_name.empty() ? "model.onnx" : sidecar_.onnx_name;
    if (!engine_)
      throw EngineError(plan_ + ": TensorRT cannot deserialize the plan (" + logger.capture.summary() +
                        "); rebuild it from the ONNX: der-export " + onnx + " --trt");
    context_ = engine_->createExecutionContext();
    if (!context_)
      throw EngineError(plan_ + ": TensorRT could not create an execution context (" + logger.capture.summary() +
                        "); the GPU may be out of memory");
    enumerate_io();
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    allocate();
  }

  void enumerate_io() {
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        throw EngineError(plan_ + ": tensor '" + name + "' is not float32; the C++ SDK runs plans with float32 I/O -- "
                          "rebuild with der-export --trt");
      const trt::Shape shape = from_dims(engine_->getTensorShape(name));
      if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) {
        outputs_.push_back({name, shape});  // non-batch dimensions are filled in by allocate()
        continue;
      }
      bool dynamic = false;
      for (const std::int64_t d : shape) dynamic = dynamic || d < 0;
      in_engine_ = shape;
      // A fully fixed input has no profile to ask for: its shape is the profile, as in runtime/tensorrt.py.
      in_min_ = dynamic ? from_dims(engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN)) : shape;
      in_max_ = dynamic ? from_dims(engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX)) : shape;
      TensorInfo t{name, shape};
      for (std::size_t k = 1; k < t.shape.size() && k < in_max_.size(); ++k)
        if (t.shape[k] < 0) t.shape[k] = in_max_[k];
      inputs_.push_back(t);
    }
    if (inputs_.size() != 1 || in_engine_.empty() || in_min_.size() != in_engine_.size() ||
        in_max_.size() != in_engine_.size() || in_max_[0] < 1)
      throw EngineError(plan_ + ": expected one input 'images' with a batch profile; rebuild it with der-export --trt");
    min_batch_ = in_min_[0];
    max_batch_ = in_max_[0];
  }

  // Buffers for the profile's largest batch, sized from the context after setting that input shape; every I/O
  // tensor needs an address, used or not.
  void allocate() {
    set_input_shape(max_batch_);
    const TensorInfo& in = inputs_[0];
    capacity_[in.name] = trt::elements(trt::input_shape(in_engine_, in_min_, in_max_, max_batch_, in.name, plan_),
                                       in.name, plan_);
    for (auto& out : outputs_) {
      const trt::Shape shape = from_dims(context_->getTensorShape(out.name.c_str()));
      capacity_[out.name] = trt::output_elements(shape, max_batch_, out.name, plan_);
      for (std::size_t k = 1; k < shape.size() && k < out.shape.size(); ++k) out.shape[k] = shape[k];
    }
    for (const auto& kv : capacity_) {
      void* ptr = nullptr;
      cuda_check(cudaMalloc(&ptr, kv.second * sizeof(float)), "cudaMalloc");
      buffers_[kv.first] = ptr;
    }
  }

  void release() noexcept {
    if (stream_ || !buffers_.empty()) cudaSetDevice(device_);  // free on the runner's GPU, whichever thread
    for (auto& kv : buffers_) cudaFree(kv.second);
    buffers_.clear();
    capacity_.clear();
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
    delete context_;  // reverse order of creation
    delete engine_;
    delete runtime_;
    context_ = nullptr;
    engine_ = nullptr;
    runtime_ = nullptr;
    inputs_.clear();
    outputs_.clear();
  }

  std::string plan_;
  int device_ = 0;
  Sidecar sidecar_;
  nvinfer1::IRuntime* runtime_ = nullptr;
  nvinfer1::ICudaEngine* engine_ = nullptr;
  nvinfer1::IExecutionContext* context_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, void*> buffers_;
  std::map<std::string, std::size_t> capacity_;  // elements each buffer holds
  std::vector<TensorInfo> inputs_, outputs_;
  trt::Shape in_engine_, in_min_, in_max_;  // the input's engine shape and profile 0
  std::int64_t min_batch_ = 1, max_batch_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace

bool has_tensorrt() { return true; }

std::unique_ptr<Runner> make_trt_runner(const std::string& plan_path, int device) {
  return std::make_unique<TrtRunner>(plan_path, device);
}

}  // namespace der
