// OpenVINO runner (compiled only with DER_WITH_OPENVINO) through the OpenVINO 2.0 C++ API: ov::Core reads the
// same .onnx der-export writes (FP32, FP16 weights, INT8 Q/DQ), compiles it for the CPU with an explicit inference
// precision and reads that precision back; the card comes from the ONNX metadata_props, which OpenVINO's ONNX
// frontend keeps in the model's rt_info under "framework". A precision the CPU lacks natively, or one the compiled
// model does not confirm, is BackendUnavailable: never a silent FP32 run.
#include <algorithm>
#include <mutex>

#include <openvino/openvino.hpp>

#include "der/runner.hpp"

namespace der {
namespace {

constexpr const char* kDevice = "CPU";

// OpenVINO's messages start with "Exception from src/...cpp:NN:" and "Check '...' failed at ..." lines; keep the
// lines that say what went wrong, joined into one (our errors are one line).
std::string reason(const std::exception& err, std::size_t limit = 240) {
  const std::string text = err.what();
  std::string out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    line.erase(0, line.find_first_not_of(" \t\r"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty() || line.rfind("Exception from ", 0) == 0 || line.rfind("Check '", 0) == 0) continue;
    out += (out.empty() ? "" : "; ") + line;
  }
  if (out.empty()) out = "no details from OpenVINO";
  return out.size() <= limit ? out : out.substr(0, limit - 3) + "...";
}

// The precision names of --precision, and what the CPU plugin calls the matching capability.
struct Precision {
  const char* name;
  ov::element::Type type;
  const char* capability;
};

Precision precision_of(const std::string& name) {
  if (name.empty() || name == "fp32") return {"fp32", ov::element::f32, ov::device::capability::FP32};
  if (name == "bf16") return {"bf16", ov::element::bf16, ov::device::capability::BF16};
  if (name == "fp16") return {"fp16", ov::element::f16, ov::device::capability::FP16};
  throw Error("unknown precision '" + name + "'; use fp32, bf16 or fp16 (with --backend openvino)");
}

std::string precision_name(const ov::element::Type& type) {
  if (type == ov::element::f32) return "fp32";
  if (type == ov::element::bf16) return "bf16";
  if (type == ov::element::f16) return "fp16";
  return type.get_type_name();
}

std::string join(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string version_number() {  // "2026.4" from "2026.4.1-22982-e213a147257-releases/2026/4", as der-infer prints it
  const std::string build = ov::get_openvino_version().buildNumber;
  const std::string release = build.substr(0, build.find('-'));
  const auto minor_end = release.find('.', release.find('.') + 1);
  return minor_end == std::string::npos ? release : release.substr(0, minor_end);
}

TensorInfo info(const ov::Output<const ov::Node>& port) {
  TensorInfo t;
  const auto& names = port.get_names();
  t.name = names.empty() ? std::string() : port.get_any_name();
  const ov::PartialShape& shape = port.get_partial_shape();
  if (shape.rank().is_static())
    for (const auto& d : shape) t.shape.push_back(d.is_static() ? d.get_length() : -1);
  return t;
}

class OvRunner final : public Runner {
 public:
  OvRunner(std::string path, const std::string& precision, int threads)
      : Runner("openvino:" + path), path_(std::move(path)), want_(precision_of(precision)), threads_(threads) {}

  std::vector<TensorInfo> inputs() const override { return inputs_; }
  std::vector<TensorInfo> outputs() const override { return outputs_; }
  std::size_t max_batch() const override {
    return !inputs_.empty() && !inputs_[0].shape.empty() && inputs_[0].shape[0] > 0
               ? static_cast<std::size_t>(inputs_[0].shape[0]) : 0;
  }
  std::size_t min_batch() const override { return max_batch() ? max_batch() : 1; }
  Card card() const override { return card_; }
  std::string description() const override { return description_; }

 protected:
  void activate_impl() override {
    try {
      activate_checked();
    } catch (const ov::Exception& err) {  // anything not mapped below: still one line, still a der::Error
      release();
      throw BackendUnavailable(path_ + ": OpenVINO failed (" + reason(err) + ")");
    } catch (...) {
      release();
      throw;
    }
  }

  void deactivate_impl() override { release(); }

  // An InferRequest is not thread-safe: each call borrows an idle one (or makes one), so concurrent calls run
  // concurrently, as ONNX Runtime's Session::Run does.
  std::vector<float> infer_impl(const float* nchw, std::size_t n, const std::string& output) const override {
    ov::InferRequest request = borrow();
    struct Return {
      const OvRunner& self;
      ov::InferRequest& request;
      ~Return() { self.give_back(std::move(request)); }
    } on_exit{*this, request};
    ov::Tensor out;
    try {
      const ov::Shape shape{n, 3, static_cast<std::size_t>(card_.height), static_cast<std::size_t>(card_.width)};
      request.set_input_tensor(ov::Tensor(ov::element::f32, shape, const_cast<float*>(nchw)));
      request.infer();
      out = request.get_tensor(output);
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO inference failed (" + reason(err) + ")");
    }
    if (out.get_element_type() != ov::element::f32)
      throw EngineError(path_ + ": output '" + output + "' is not float32; export the model with der-export");
    const float* data = out.data<const float>();
    return std::vector<float>(data, data + out.get_size());
  }

 private:
  void activate_checked() {
    core_ = std::make_unique<ov::Core>();
    // Refuse before compiling: the CPU plugin would quietly run FP32 for a precision it cannot do natively.
    const auto caps = core_->get_property(kDevice, ov::device::capabilities);
    if (std::find(caps.begin(), caps.end(), want_.capability) == caps.end())
      throw BackendUnavailable(path_ + ": this CPU has no native " + want_.name + " (OpenVINO CPU capabilities: " +
                               join(caps) + "); use --precision fp32, or a CPU with " +
                               (want_.type == ov::element::bf16 ? "AMX or AVX512_BF16" : "AMX-FP16 or AVX512_FP16"));
    std::shared_ptr<ov::Model> model;
    try {
      model = core_->read_model(path_);
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": cannot load ONNX model (" + reason(err) + "); re-export it with der-export");
    }
    if (!model->has_rt_info("framework", kOnnxCardKey))
      throw EngineError(path_ + " has no der-deploy model card; export it with der-export");
    try {
      card_ = Card::from_json(model->get_rt_info<std::string>("framework", kOnnxCardKey));
    } catch (const CardError& err) {
      throw EngineError(path_ + ": bad model card (" + err.what() + "); re-export it with der-export");
    }
    inputs_.clear();
    outputs_.clear();
    const std::shared_ptr<const ov::Model> cmodel = model;
    for (const auto& port : cmodel->inputs()) {
      inputs_.push_back(info(port));
      if (port.get_element_type() != ov::element::f32)
        throw EngineError(path_ + ": input '" + inputs_.back().name + "' is not a float32 tensor; export the model "
                          "with der-export");
    }
    for (const auto& port : cmodel->outputs()) outputs_.push_back(info(port));

    ov::AnyMap config{ov::hint::inference_precision(want_.type),
                      ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
    if (threads_ > 0) config.emplace(ov::inference_num_threads(threads_));
    try {
      compiled_ = core_->compile_model(model, kDevice, config);
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO cannot compile the model for the CPU (" + reason(err) + ")");
    }
    // What will run, as the compiled model reports it; anything but the requested precision is refused.
    const ov::element::Type got = compiled_.get_property(ov::hint::inference_precision);
    if (got != want_.type)
      throw BackendUnavailable(path_ + ": OpenVINO compiled the model for " + precision_name(got) + " instead of the "
                               "requested " + want_.name + "; refusing to run at another precision");
    const auto devices = compiled_.get_property(ov::execution_devices);
    description_ = "OpenVINO " + version_number() + " " + join(devices, "+") + " " + precision_name(got);  // as der-infer
  }

  ov::InferRequest borrow() const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        ov::InferRequest request = std::move(idle_.back());
        idle_.pop_back();
        return request;
      }
    }
    try {
      return compiled_.create_infer_request();  // thread-safe on a CompiledModel
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO could not create an infer request (" + reason(err) + ")");
    }
  }

  void give_back(ov::InferRequest&& request) const noexcept {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(std::move(request));
    } catch (...) {  // a request we cannot keep is simply released
    }
  }

  void release() noexcept {
    idle_.clear();  // requests before the compiled model, the model before the core
    compiled_ = ov::CompiledModel();
    core_.reset();
  }

  std::string path_;
  Precision want_;
  int threads_;
  std::unique_ptr<ov::Core> core_;
  mutable ov::CompiledModel compiled_;  // create_infer_request() is non-const (and thread-safe)
  Card card_;
  std::vector<TensorInfo> inputs_, outputs_;
  std::string description_;
  mutable std::mutex mutex_;
  mutable std::vector<ov::InferRequest> idle_;
};

}  // namespace

bool has_openvino() { return true; }

std::unique_ptr<Runner> make_ov_runner(const std::string& onnx_path, const std::string& precision,
                                       int inference_threads) {
  return std::make_unique<OvRunner>(onnx_path, precision, inference_threads);
}

}  // namespace der
