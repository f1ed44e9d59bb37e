// ONNX Runtime runner through the official C++ API (onnxruntime_cxx_api.h), like runtime/onnxrt.py:
// explicit providers, never a silent downgrade; the card from metadata_props["der_deploy.card"] (onnx_file.hpp).
#include <algorithm>
#include <cstring>

#include <onnxruntime_cxx_api.h>

#include "onnx_file.hpp"

namespace der {
namespace {

// One process-wide environment: ONNX Runtime wants a single OrtEnv (it owns logging and global thread pools).
Ort::Env& env() {
  static Ort::Env instance(ORT_LOGGING_LEVEL_ERROR, "der_runtime");
  return instance;
}

std::string first_line(const std::string& text, std::size_t limit = 200) {
  std::string line = text.substr(0, text.find('\n'));
  return line.size() <= limit ? line : line.substr(0, limit - 3) + "...";
}

std::string provider_name(const std::string& raw) {
  std::string key = raw;
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  std::string lower = key;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "cpu" || key == "CPUExecutionProvider") return "CPUExecutionProvider";
  if (lower == "cuda" || key == "CUDAExecutionProvider") return "CUDAExecutionProvider";
  throw BackendUnavailable("unknown execution provider '" + key + "'; the C++ SDK supports cpu and cuda "
                           "(CPUExecutionProvider, CUDAExecutionProvider)");
}

class OrtRunner final : public OnnxFileRunner {
 public:
  OrtRunner(std::string path, const std::vector<std::string>& providers, int threads, int device)
      : OnnxFileRunner("onnxrt:", std::move(path)), threads_(threads), device_(device) {
    for (const auto& p : providers) {
      if (p.find_first_not_of(" \t") == std::string::npos) continue;
      std::string name = provider_name(p);
      if (std::find(requested_.begin(), requested_.end(), name) == requested_.end()) requested_.push_back(name);
    }
    if (requested_.empty()) throw BackendUnavailable("no execution provider given; use e.g. --providers cpu");
  }

 protected:
  void activate_impl() override {
    load_card();  // a corrupt file or a missing card: one line before ONNX Runtime parses the graph
    const std::vector<std::string> available = Ort::GetAvailableProviders();
    for (const auto& name : requested_) {
      if (std::find(available.begin(), available.end(), name) == available.end()) {
        std::string list;
        for (const auto& a : available) list += (list.empty() ? "" : ", ") + a;
        throw BackendUnavailable("ONNX Runtime provider " + name + " is not available here (available: " + list +
                                 "); link der_runtime against an ONNX Runtime GPU build (onnxruntime-linux-x64-gpu) "
                                 "and install a CUDA-capable GPU driver");
      }
    }
    Ort::SessionOptions opts;
    opts.SetLogSeverityLevel(3);  // errors only: warnings would interleave with CLI output
    if (threads_ > 0) opts.SetIntraOpNumThreads(threads_);
    try {
      if (std::find(requested_.begin(), requested_.end(), "CUDAExecutionProvider") != requested_.end()) {
        OrtCUDAProviderOptions cuda{};
        cuda.device_id = device_;
        opts.AppendExecutionProvider_CUDA(cuda);
      }
    } catch (const Ort::Exception& err) {
      throw BackendUnavailable(path_ + ": ONNX Runtime could not initialise CUDAExecutionProvider (" +
                               first_line(err.what()) + "); check the CUDA installation or use providers cpu");
    }
    // CPU always stays last as ONNX Runtime's fallback for ops a GPU provider does not implement.
    try {
      session_ = std::make_unique<Ort::Session>(env(), path_.c_str(), opts);
    } catch (const Ort::Exception& err) {
      throw EngineError(path_ + ": cannot load ONNX model (" + first_line(err.what()) + "); re-export it with der-export");
    }
    Ort::AllocatorWithDefaultOptions alloc;
    for (std::size_t i = 0; i < session_->GetInputCount(); ++i) {
      const Ort::TypeInfo type = session_->GetInputTypeInfo(i);
      const bool is_float = type.GetONNXType() == ONNX_TYPE_TENSOR &&
                            type.GetTensorTypeAndShapeInfo().GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
      add_input(info(session_->GetInputNameAllocated(i, alloc).get(), type), is_float);
    }
    for (std::size_t i = 0; i < session_->GetOutputCount(); ++i)
      add_output(info(session_->GetOutputNameAllocated(i, alloc).get(), session_->GetOutputTypeInfo(i)));
  }

  void deactivate_impl() override { session_.reset(); }

  // Session::Run is thread-safe: nothing here mutates the runner.
  std::vector<float> infer_impl(const float* nchw, std::size_t n, const std::string& output) const override {
    const std::int64_t shape[4] = {static_cast<std::int64_t>(n), 3, card_.height, card_.width};
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value input = Ort::Value::CreateTensor<float>(mem, const_cast<float*>(nchw), n * image_floats(), shape, 4);
    const char* in_names[] = {input_name().c_str()};
    const char* out_names[] = {output.c_str()};
    std::vector<Ort::Value> out;
    try {
      out = session_->Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names, 1);
    } catch (const Ort::Exception& err) {
      throw EngineError(path_ + ": inference failed (" + first_line(err.what()) + ")");
    }
    auto info = out[0].GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw EngineError(path_ + ": output '" + output + "' is not float32; export the model with der-export");
    const float* data = out[0].GetTensorData<float>();
    return std::vector<float>(data, data + info.GetElementCount());
  }

 private:
  static TensorInfo info(const char* name, const Ort::TypeInfo& type) {
    TensorInfo t{name, {}};
    if (type.GetONNXType() == ONNX_TYPE_TENSOR) t.shape = type.GetTensorTypeAndShapeInfo().GetShape();
    return t;
  }

  int threads_;
  int device_;
  std::vector<std::string> requested_;
  std::unique_ptr<Ort::Session> session_;
};

}  // namespace

std::unique_ptr<Runner> make_ort_runner(const std::string& onnx_path, const std::vector<std::string>& providers,
                                        int intra_op_threads, int device) {
  return std::make_unique<OrtRunner>(onnx_path, providers, intra_op_threads, device);
}

}  // namespace der
