// TensorRT 10/11 runner (compiled only with DER_WITH_TENSORRT): NvInfer IRuntime / ICudaEngine /
// IExecutionContext, name-based I/O, setInputShape + setTensorAddress + enqueueV3 on one CUDA stream.
// Mirrors runtime/tensorrt.py: the .plan.json sidecar carries the card and is checked (TensorRT version,
// compute capability) before the plan is deserialised. Written against the documented NvInferRuntime.h API;
// no machine here has TensorRT, so this file is not compiled in CI (see README, "C++ SDK").
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>

#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include "der/runner.hpp"
#include "der/sidecar.hpp"

namespace der {
namespace {

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last_ = msg;  // the reason quoted in our one-line errors
  }
  std::string last() const { return last_.empty() ? "no details from TensorRT" : last_; }

 private:
  std::string last_;
};

void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess)
    throw EngineError(what + " failed (" + cudaGetErrorString(err) + "); check the GPU and driver with der-doctor");
}

// The version string the sidecar recorded (Python's trt.__version__): "10.3.0" or "10.3.0.26".
std::string library_version(const std::string& recorded) {
  const int v = getInferLibVersion();  // major * 10000 + minor * 100 + patch (TensorRT 10+)
  const std::string three = std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
  const std::string four = three + "." + std::to_string(NV_TENSORRT_BUILD);
  return recorded == three || recorded == four ? recorded : four;
}

class TrtRunner final : public Runner {
 public:
  explicit TrtRunner(std::string plan) : Runner("tensorrt:" + plan), plan_(std::move(plan)) {}
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
    cuda_check(cudaSetDevice(0), "cudaSetDevice");  // the current device is per thread
    const auto& in = inputs_[0];
    nvinfer1::Dims dims = engine_->getTensorShape(in.name.c_str());
    dims.d[0] = static_cast<std::int64_t>(n);
    if (!context_->setInputShape(in.name.c_str(), dims))
      throw EngineError(plan_ + ": TensorRT refused batch " + std::to_string(n) + " (" + logger_.last() + ")");
    const std::size_t in_bytes = n * per_image(in) * sizeof(float);
    cuda_check(cudaMemcpyAsync(buffers_.at(in.name), nchw, in_bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    for (const auto& kv : buffers_)
      if (!context_->setTensorAddress(kv.first.c_str(), kv.second))
        throw EngineError(plan_ + ": TensorRT rejected the buffer of '" + kv.first + "' (" + logger_.last() + ")");
    if (!context_->enqueueV3(stream_))
      throw EngineError(plan_ + ": TensorRT inference failed (" + logger_.last() + ")");
    const TensorInfo* out = nullptr;
    for (const auto& o : outputs_)
      if (o.name == output) out = &o;
    if (!out) throw EngineError(plan_ + " has no output '" + output + "'; rebuild it with der-export --trt");
    std::vector<float> host(n * per_image(*out));
    cuda_check(cudaMemcpyAsync(host.data(), buffers_.at(out->name), host.size() * sizeof(float), cudaMemcpyDeviceToHost,
                               stream_), "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return host;
  }

 private:
  static std::size_t per_image(const TensorInfo& t) {
    std::size_t v = 1;
    for (std::size_t i = 1; i < t.shape.size(); ++i) v *= static_cast<std::size_t>(t.shape[i]);
    return v;
  }

  void activate_checked() {
    sidecar_ = read_sidecar(plan_);
    cuda_check(cudaSetDevice(0), "cudaSetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    for (const auto& w : check_compatible(sidecar_, library_version(sidecar_.tensorrt_version), prop.name, cc, plan_))
      std::fprintf(stderr, "warning: %s\n", w.c_str());

    std::ifstream f(plan_, std::ios::binary);
    const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (blob.empty()) throw EngineError(plan_ + ": cannot read the plan (empty or unreadable); rebuild it with der-export --trt");
    runtime_ = nvinfer1::createInferRuntime(logger_);
    if (!runtime_) throw BackendUnavailable("TensorRT could not create a runtime (" + logger_.last() + "); check the driver");
    engine_ = runtime_->deserializeCudaEngine(blob.data(), blob.size());
    if (!engine_)
      throw EngineError(plan_ + ": TensorRT cannot deserialize the plan (" + logger_.last() +
                        "); rebuild it from the ONNX: der-export " + (sidecar_.onnx_name.empty() ? "model.onnx" : sidecar_.onnx_name) + " --trt");
    context_ = engine_->createExecutionContext();
    if (!context_) throw EngineError(plan_ + ": TensorRT could not create an execution context (" + logger_.last() + ")");

    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        throw EngineError(plan_ + ": tensor '" + name + "' is not float32; the C++ SDK runs plans with float32 I/O -- "
                          "rebuild with der-export --trt");
      const nvinfer1::Dims d = engine_->getTensorShape(name);
      TensorInfo t{name, std::vector<std::int64_t>(d.d, d.d + d.nbDims)};
      if (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
        const nvinfer1::Dims lo = engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN);
        const nvinfer1::Dims hi = engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
        min_batch_ = d.d[0] > 0 ? d.d[0] : lo.d[0];
        max_batch_ = d.d[0] > 0 ? d.d[0] : hi.d[0];
        for (int k = 1; k < d.nbDims; ++k)
          if (t.shape[k] < 0) t.shape[k] = hi.d[k];
        inputs_.push_back(t);
      } else {
        outputs_.push_back(t);
      }
    }
    if (inputs_.size() != 1 || max_batch_ < 1)
      throw EngineError(plan_ + ": expected one input 'images' with a batch profile; rebuild it with der-export --trt");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    // Buffers for the profile's largest batch; every I/O tensor needs an address, used or not.
    for (auto* list : {&inputs_, &outputs_})
      for (auto& t : *list) {
        void* ptr = nullptr;
        cuda_check(cudaMalloc(&ptr, static_cast<std::size_t>(max_batch_) * per_image(t) * sizeof(float)), "cudaMalloc");
        buffers_[t.name] = ptr;
      }
  }

  void release() noexcept {
    for (auto& kv : buffers_) cudaFree(kv.second);
    buffers_.clear();
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
    delete context_;  // reverse order of creation
    delete engine_;
    delete runtime_;
    context_ = nullptr;
    engine_ = nullptr;
    runtime_ = nullptr;
  }

  std::string plan_;
  Sidecar sidecar_;
  mutable Logger logger_;
  nvinfer1::IRuntime* runtime_ = nullptr;
  nvinfer1::ICudaEngine* engine_ = nullptr;
  nvinfer1::IExecutionContext* context_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, void*> buffers_;
  std::vector<TensorInfo> inputs_, outputs_;
  std::int64_t min_batch_ = 1, max_batch_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace

bool has_tensorrt() { return true; }

std::unique_ptr<Runner> make_trt_runner(const std::string& plan_path) { return std::make_unique<TrtRunner>(plan_path); }

}  // namespace der
