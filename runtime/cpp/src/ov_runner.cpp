// OpenVINO runner (compiled only with DER_WITH_OPENVINO) through the OpenVINO 2.0 C++ API, like
// backends/openvino/runner.py: ov::Core compiles the same .onnx der-export writes (FP32, FP16 weights, INT8 Q/DQ)
// for the CPU with an explicit inference precision and performance hint and reads both back; the card comes from
// the file's metadata_props (onnx_file.hpp), so a cache hit never reads the graph. A precision the CPU lacks
// natively, or one the compiled model does not confirm, is BackendUnavailable: never a silent FP32 run.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <system_error>

#include <openvino/openvino.hpp>

#include "onnx_file.hpp"

namespace der {
namespace {

// One ov::Core per process, alive until exit (backends/openvino/core.py is the Python side). Each Core's CPU plugin
// points the loading thread's alternate signal stack at a stack of its own and puts the previous one back when it
// unloads, so Cores ending in another order than they started leave that thread on freed memory: the next signal
// handled there (SA_ONSTACK: SIGTERM/SIGCHLD handlers of the embedding service) crashes the process or writes into
// reused memory. Compiling on one Core from several threads is supported by OpenVINO.
std::shared_ptr<ov::Core> shared_core() {
  static const auto core = std::make_shared<ov::Core>();
  return core;
}

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

ov::hint::PerformanceMode mode_of(const std::string& name) {
  if (name == "latency") return ov::hint::PerformanceMode::LATENCY;
  if (name == "throughput") return ov::hint::PerformanceMode::THROUGHPUT;
  throw Error("unknown OpenVINO mode '" + name + "'; use latency or throughput (with --backend openvino)");
}

std::string lower(const ov::hint::PerformanceMode& mode) {  // "throughput", from OpenVINO's "THROUGHPUT"
  std::ostringstream os;
  os << mode;
  std::string s = os.str();
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
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

class OvRunner final : public OnnxFileRunner {
 public:
  OvRunner(std::string path, const std::string& precision, int threads, const std::string& mode, std::string cache)
      : OnnxFileRunner("openvino:", std::move(path)), want_(precision_of(precision)), threads_(threads),
        mode_(mode_of(mode)), cache_dir_(std::move(cache)) {}

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

  // An InferRequest is not thread-safe: each call borrows idle ones (or makes more), so concurrent calls run
  // concurrently, as ONNX Runtime's Session::Run does. Throughput mode splits the batch into contiguous parts,
  // one per request, run at once and joined in order (a fixed batch dimension is never split).
  std::vector<float> infer_impl(const float* nchw, std::size_t n, const std::string& output) const override {
    const bool split = mode_ == ov::hint::PerformanceMode::THROUGHPUT && max_batch() == 0;
    Lease lease(*this, split ? std::min(requests_, n) : 1);
    std::vector<ov::InferRequest>& reqs = lease.requests;
    const std::size_t parts = reqs.size();
    std::vector<float> out;
    try {
      for (std::size_t i = 0; i < parts; ++i) {
        const std::size_t lo = i * n / parts, hi = (i + 1) * n / parts;
        const ov::Shape shape{hi - lo, 3, static_cast<std::size_t>(card_.height),
                              static_cast<std::size_t>(card_.width)};
        reqs[i].set_input_tensor(ov::Tensor(ov::element::f32, shape, const_cast<float*>(nchw) + lo * image_floats()));
      }
      if (parts == 1) {
        reqs[0].infer();
      } else {
        run_concurrently(reqs);
      }
      for (auto& request : reqs) {
        const ov::Tensor t = request.get_tensor(output);
        if (t.get_element_type() != ov::element::f32)
          throw EngineError(path_ + ": output '" + output + "' is not float32; export the model with der-export");
        const float* data = t.data<const float>();
        out.insert(out.end(), data, data + t.get_size());  // copied out: the next call reuses the buffers
      }
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO inference failed (" + reason(err) + ")");
    }
    return out;
  }

 private:
  // Requests borrowed for one call, given back when it ends (each one waited for, so none is still busy).
  struct Lease {
    Lease(const OvRunner& runner, std::size_t count) : self(runner) {
      {
        std::lock_guard<std::mutex> lock(self.mutex_);
        while (requests.size() < count && !self.idle_.empty()) {
          requests.push_back(std::move(self.idle_.back()));
          self.idle_.pop_back();
        }
      }
      while (requests.size() < count) requests.push_back(self.create_request());
    }
    ~Lease() {
      try {
        std::lock_guard<std::mutex> lock(self.mutex_);
        for (auto& r : requests) self.idle_.push_back(std::move(r));
      } catch (...) {  // a request we cannot keep is simply released
      }
    }
    const OvRunner& self;
    std::vector<ov::InferRequest> requests;
  };

  static void run_concurrently(std::vector<ov::InferRequest>& reqs) {
    std::exception_ptr failure;
    std::size_t started = 0;
    try {
      for (; started < reqs.size(); ++started) reqs[started].start_async();
    } catch (...) {
      failure = std::current_exception();
    }
    for (std::size_t i = 0; i < started; ++i) {  // every started request is waited for, even after a failure
      try {
        reqs[i].wait();
      } catch (...) {
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  void activate_checked() {
    load_card();  // a corrupt file or a missing card: one line before OpenVINO probes its frontends
    core_ = shared_core();
    // Refuse before compiling: the CPU plugin would quietly run FP32 for a precision it cannot do natively.
    const auto caps = core_->get_property(kDevice, ov::device::capabilities);
    if (std::find(caps.begin(), caps.end(), want_.capability) == caps.end())
      throw BackendUnavailable(path_ + ": this CPU has no native " + want_.name + " (OpenVINO CPU capabilities: " +
                               join(caps) + "); use --precision fp32, or a CPU with " +
                               (want_.type == ov::element::bf16 ? "AMX or AVX512_BF16" : "AMX-FP16 or AVX512_FP16"));
    ov::AnyMap config{ov::hint::inference_precision(want_.type), ov::hint::performance_mode(mode_)};
    if (threads_ > 0) config.emplace(ov::inference_num_threads(threads_));
    if (!cache_dir_.empty()) {
      // One subfolder per file content: OpenVINO keys a blob by path and trusts it while size and mtime (whole
      // seconds) match, so a same-size re-export within a second, or under normalised mtimes (container layers,
      // Nix, Bazel), would silently load the old model.
      const std::filesystem::path folder = std::filesystem::path(cache_dir_) / ("onnx-" + content_fingerprint(path_));
      std::error_code ec;
      std::filesystem::create_directories(folder, ec);
      if (ec)
        throw EngineError(cache_dir_ + ": cannot create the OpenVINO cache folder (" + ec.message() +
                          "); choose another with --cache-dir");
      config.emplace(ov::cache_dir(folder.string()));
    }
    try {
      // From the path, not a read ov::Model: with a cache, a hit then skips reading the ONNX file (OpenVINO's advice).
      compiled_ = core_->compile_model(path_, kDevice, config);
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO cannot compile it (" + reason(err) + "); re-export it with der-export "
                        "or run it with --backend ort");
    }
    for (const auto& port : compiled_.inputs()) add_input(info(port), port.get_element_type() == ov::element::f32);
    for (const auto& port : compiled_.outputs()) add_output(info(port));
    // What will run, as the compiled model reports it; anything but the requested precision is refused.
    const ov::element::Type got = compiled_.get_property(ov::hint::inference_precision);
    if (got != want_.type)
      throw BackendUnavailable(path_ + ": OpenVINO compiled the model for " + precision_name(got) + " instead of the "
                               "requested " + want_.name + "; refusing to run at another precision");
    const ov::hint::PerformanceMode hint = compiled_.get_property(ov::hint::performance_mode);
    requests_ = hint == ov::hint::PerformanceMode::LATENCY
                    ? 1 : std::max<std::size_t>(1, compiled_.get_property(ov::optimal_number_of_infer_requests));
    for (std::size_t i = 0; i < requests_; ++i) idle_.push_back(create_request());
    const bool cached = !cache_dir_.empty() && compiled_.get_property(ov::loaded_from_cache);
    // As der-infer prints it, plus the hint read back: "OpenVINO 2026.4 CPU fp32, throughput, 2 requests".
    description_ = "OpenVINO " + version_number() + " " + join(compiled_.get_property(ov::execution_devices), "+") +
                   " " + precision_name(got) + ", " + lower(hint) + ", " + std::to_string(requests_) +
                   (requests_ == 1 ? " request" : " requests") + (cached ? ", cached" : "");
  }

  ov::InferRequest create_request() const {
    try {
      return compiled_.create_infer_request();  // thread-safe on a CompiledModel
    } catch (const ov::Exception& err) {
      throw EngineError(path_ + ": OpenVINO could not create an infer request (" + reason(err) + ")");
    }
  }

  void release() noexcept {
    idle_.clear();  // requests before the compiled model, the model before the core
    compiled_ = ov::CompiledModel();
    core_.reset();
  }

  Precision want_;
  int threads_;
  ov::hint::PerformanceMode mode_;
  std::string cache_dir_;
  std::shared_ptr<ov::Core> core_;  // the process's one Core (shared_core)
  mutable ov::CompiledModel compiled_;  // create_infer_request() is non-const (and thread-safe)
  std::size_t requests_ = 1;            // 1, or OPTIMAL_NUMBER_OF_INFER_REQUESTS in throughput mode
  std::string description_;
  mutable std::mutex mutex_;
  mutable std::vector<ov::InferRequest> idle_;
};

}  // namespace

bool has_openvino() { return true; }

std::unique_ptr<Runner> make_ov_runner(const std::string& onnx_path, const std::string& precision,
                                       int inference_threads, const std::string& mode, const std::string& cache_dir) {
  return std::make_unique<OvRunner>(onnx_path, precision, inference_threads, mode, cache_dir);
}

}  // namespace der
