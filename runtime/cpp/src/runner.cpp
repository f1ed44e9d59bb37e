// Runner lifecycle and engine selection (runtime/base.py, runtime/artifacts.py).
#include "der/runner.hpp"

#include <algorithm>
#include <cctype>
#include <sys/stat.h>

namespace der {

void Runner::activate() {
  if (active_) throw EngineError("runner " + name_ + " is already active");
  activate_impl();
  active_ = true;
}

void Runner::deactivate() {
  if (!active_) return;
  active_ = false;
  deactivate_impl();
}

std::vector<float> Runner::infer(const float* nchw, std::size_t n, const std::string& output) const {
  if (!active_) throw EngineError("runner " + name_ + " is not active; call activate() first");
  return infer_impl(nchw, n, output);
}

namespace {
// pathlib's Path.suffix: the last ".xyz" of the final component ("" for ".bashrc" or "name.").
std::string suffix(const std::string& path) {
  std::string name = path;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  auto slash = name.find_last_of('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
  auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == name.size()) return "";
  std::string s = name.substr(dot);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
}  // namespace

std::string engine_kind(const std::string& path) {
  const std::string s = suffix(path);
  std::string kind;
  if (s == ".onnx") {
    kind = "onnx";
  } else if (s == ".plan" || s == ".engine") {
    kind = "tensorrt";
  } else {
    throw EngineError(path + ": unknown engine type '" + (s.empty() ? "(no suffix)" : s) +
                      "'; give an .onnx file or a TensorRT .plan/.engine built by der-export");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    bool dir = ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    throw EngineError(path + ": " + (dir ? "folder, not an engine file" : "no such file") +
                      "; check the path or export the model with der-export");
  }
  return kind;
}

namespace {
// Option values open_runner refuses before any backend is asked; wording as der-infer's.
void check_values(const Options& o) {
  if (o.backend != "auto" && o.backend != "ort" && o.backend != "trt" && o.backend != "openvino")
    throw EngineError("unknown backend '" + o.backend + "'; use one of auto, ort, trt, openvino");
  if (!o.precision.empty() && o.precision != "fp32" && o.precision != "bf16" && o.precision != "fp16")
    throw Error("unknown precision '" + o.precision + "'; use fp32, bf16 or fp16 (with --backend openvino)");
  if (o.mode != "latency" && o.mode != "throughput")
    throw Error("unknown OpenVINO mode '" + o.mode + "'; use latency or throughput (with --backend openvino)");
  if (o.device < 0)
    throw Error("device must be a GPU index >= 0, got " + std::to_string(o.device) + "; see der-doctor for the GPUs");
  if (o.backend == "openvino") return;
  if (!o.precision.empty())
    throw Error("--precision " + o.precision + " applies to --backend openvino only; ONNX Runtime and TensorRT run "
                "the engine file's own precision");
  if (o.mode != "latency")
    throw Error("--mode " + o.mode + " applies to --backend openvino only; ONNX Runtime and TensorRT take "
                "--threads and --batch-size");
  if (!o.cache_dir.empty())
    throw Error("--cache-dir applies to --backend openvino only (its compiled-model cache); ONNX Runtime and "
                "TensorRT load the engine file as it is");
}
bool wants_cuda(const std::vector<std::string>& providers) {
  for (std::string p : providers) {
    std::transform(p.begin(), p.end(), p.begin(), [](unsigned char c) { return std::tolower(c); });
    if (p.find("cuda") != std::string::npos) return true;
  }
  return false;
}
}  // namespace

std::unique_ptr<Runner> open_runner(const std::string& path, const Options& options) {
  check_values(options);
  const std::string& backend = options.backend;
  const bool providers_given = !(options.providers.size() == 1 && options.providers[0] == "cpu");
  if (engine_kind(path) == "onnx") {
    if (backend == "trt")
      throw EngineError(path + " is an ONNX model, not a TensorRT engine; build a .plan with der-export, or run it "
                        "on ONNX Runtime's TensorRT provider with --backend ort --providers tensorrt");
    if (backend == "openvino") {
      if (providers_given)
        throw EngineError(path + ": --providers applies to ONNX Runtime only; OpenVINO runs on the CPU");
      if (options.device != 0)
        throw EngineError(path + ": --device applies to GPUs (TensorRT, ONNX Runtime's CUDA provider); OpenVINO runs "
                          "on the CPU");
      return make_ov_runner(path, options.precision, options.intra_op_threads, options.mode, options.cache_dir);
    }
    if (options.device != 0 && !wants_cuda(options.providers))
      throw EngineError(path + ": --device " + std::to_string(options.device) + " needs a GPU provider; add "
                        "--providers cuda,cpu (ONNX Runtime on the CPU has no device index)");
    return make_ort_runner(path, options.providers, options.intra_op_threads, options.device);
  }
  if (backend == "ort")
    throw EngineError(path + " is a TensorRT engine; use --backend trt (or auto), or pass the .onnx file to ONNX Runtime");
  if (backend == "openvino")
    throw EngineError(path + " is a TensorRT engine; OpenVINO runs the .onnx file der-export wrote beside it");
  if (providers_given)
    throw EngineError(path + ": --providers applies to ONNX Runtime only; a TensorRT engine always runs on its GPU");
  return make_trt_runner(path, options.device);
}

#ifndef DER_WITH_OPENVINO
bool has_openvino() { return false; }
std::unique_ptr<Runner> make_ov_runner(const std::string& onnx_path, const std::string&, int, const std::string&,
                                       const std::string&) {
  throw BackendUnavailable(onnx_path + ": this der_runtime was built without OpenVINO; pip install openvino into .venv "
                           "and rebuild (make cpp), or pass cmake -DOpenVINO_DIR=<site-packages>/openvino/cmake");
}
#endif

#ifndef DER_WITH_TENSORRT
bool has_tensorrt() { return false; }
std::unique_ptr<Runner> make_trt_runner(const std::string& plan_path, int) {
  throw BackendUnavailable(plan_path + ": this der_runtime was built without TensorRT; rebuild it on a machine with "
                           "TensorRT and CUDA (cmake -DDER_WITH_TENSORRT=ON -DTENSORRT_ROOT=DIR), or run the .onnx "
                           "file with ONNX Runtime");
}
#endif

}  // namespace der
