// The TensorRT plan sidecar: the checks of runtime/sidecar.py (Sidecar.from_dict, check_compatible), same wording.
#include "der/sidecar.hpp"

#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "der/error.hpp"

namespace der {
namespace {

using Json = nlohmann::ordered_json;  // keeps the card's provenance in the file's order, as card.cpp does
const char* const kFormat = "der-deploy.tensorrt-plan";
constexpr int kVersion = 1;

std::string base_name(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string sm(const std::string& cc) {
  std::string out = "sm_";
  for (char ch : cc)
    if (ch != '.') out += ch;
  return out;
}

// ^[0-9a-f]{64}$ and ^\d+\.\d+$ of runtime/sidecar.py, without std::regex.
bool is_sha256(const Json& v) {
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

bool is_compute_capability(const Json& v) {
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  const auto dot = s.find('.');
  auto digits = [](const std::string& t) { return !t.empty() && t.find_first_not_of("0123456789") == std::string::npos; };
  return dot != std::string::npos && digits(s.substr(0, dot)) && digits(s.substr(dot + 1));
}

bool positive_ints(const Json& s) {
  if (!s.is_array() || s.empty()) return false;
  for (const auto& d : s)
    if (!d.is_number_integer() || d.get<long long>() <= 0) return false;
  return true;
}

}  // namespace

const Profile* Sidecar::profile_for(const std::string& input) const {
  for (const auto& p : profiles)
    if (p.input == input) return &p;
  return nullptr;
}

Sidecar Sidecar::from_json(const std::string& text, const std::string& where) {
  auto bad = [&](const std::string& msg) { return EngineError(where + ": " + msg + "; rebuild the plan with der-export --trt"); };
  Json data;
  try {
    data = Json::parse(text);
  } catch (const Json::parse_error& err) {
    throw EngineError(where + ": not valid JSON (" + err.what() + "); rebuild with der-export --trt");
  }
  if (!data.is_object()) throw bad(std::string("must be a JSON object, got ") + data.type_name());
  if (!data.contains("format") || data["format"] != kFormat)
    throw bad("not a der-deploy TensorRT sidecar (format " + (data.contains("format") ? data["format"].dump() : "None") + ")");
  if (!data.contains("format_version") || !data["format_version"].is_number_integer() || data["format_version"] != kVersion)
    throw bad("sidecar format version " + (data.contains("format_version") ? data["format_version"].dump() : "None") +
              " is not supported (this der-deploy reads " + std::to_string(kVersion) + ")");
  std::string missing;
  for (const char* k : {"card", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                        "profiles", "build_seconds", "built_at", "der_deploy_version"})
    if (!data.contains(k)) missing += (missing.empty() ? "" : ", ") + std::string(k);
  if (!missing.empty()) throw bad("missing field(s) " + missing);
  for (const char* k : {"tensorrt_version", "gpu_name", "built_at", "der_deploy_version"}) {
    const Json& v = data[k];
    if (!v.is_string() || v.get<std::string>().find_first_not_of(" \t\r\n") == std::string::npos)
      throw bad(std::string("field '") + k + "' must be a non-empty string");
  }
  if (!is_sha256(data["onnx_sha256"]))
    throw bad("field 'onnx_sha256' must be a 64-digit hex SHA-256");
  Sidecar out;
  if (data.contains("plan_sha256") && !data["plan_sha256"].is_null()) {
    if (!is_sha256(data["plan_sha256"]))
      throw bad("field 'plan_sha256' must be a 64-digit hex SHA-256 or null");
    out.plan_sha256 = data["plan_sha256"];
  }
  if (!is_compute_capability(data["compute_capability"]))
    throw bad("field 'compute_capability' must look like '8.6', got " + data["compute_capability"].dump());
  const Json& prec = data["precision"];
  if (!(prec == "fp32" || prec == "fp16" || prec == "int8"))
    throw bad("field 'precision' must be one of fp32, fp16, int8, got " + prec.dump());
  const Json& secs = data["build_seconds"];
  if (!secs.is_number() || secs.get<double>() < 0)
    throw bad("field 'build_seconds' must be a non-negative number, got " + secs.dump());
  const Json& profiles = data["profiles"];
  if (!profiles.is_array() || profiles.empty()) throw bad("field 'profiles' must be a non-empty list");
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    const Json& p = profiles[i];
    if (!p.is_object() || !p.contains("input") || !p["input"].is_string())
      throw bad("profile " + std::to_string(i) + " must be an object with an 'input' name");
    Profile prof;
    prof.input = p["input"];
    std::vector<std::int64_t>* dst[] = {&prof.min, &prof.opt, &prof.max};
    const char* keys[] = {"min", "opt", "max"};
    for (int k = 0; k < 3; ++k) {
      if (!p.contains(keys[k]) || !positive_ints(p[keys[k]]))
        throw bad("profile " + std::to_string(i) + " (" + prof.input + "): '" + keys[k] +
                  "' must be a list of positive integers, got " + (p.contains(keys[k]) ? p[keys[k]].dump() : "None"));
      *dst[k] = p[keys[k]].get<std::vector<std::int64_t>>();
    }
    if (prof.min.size() != prof.opt.size() || prof.opt.size() != prof.max.size())
      throw bad("profile " + std::to_string(i) + " (" + prof.input + "): min/opt/max have different ranks");
    for (std::size_t d = 0; d < prof.min.size(); ++d)
      if (!(prof.min[d] <= prof.opt[d] && prof.opt[d] <= prof.max[d]))
        throw bad("profile " + std::to_string(i) + " (" + prof.input + "): needs min <= opt <= max in every dimension");
    out.profiles.push_back(std::move(prof));
  }
  try {
    out.card = Card::from_json(data["card"].dump());
  } catch (const CardError& err) {
    throw bad(std::string("bad model card (") + err.what() + ")");
  }
  if (data.contains("extra") && !data["extra"].is_object()) throw bad("field 'extra' must be an object");
  out.onnx_name = data.contains("onnx_name") && data["onnx_name"].is_string() ? data["onnx_name"].get<std::string>() : "";
  out.onnx_sha256 = data["onnx_sha256"];
  out.tensorrt_version = data["tensorrt_version"];
  out.gpu_name = data["gpu_name"];
  out.compute_capability = data["compute_capability"];
  out.precision = prec;
  return out;
}

std::string sidecar_path(const std::string& plan_path) { return plan_path + ".json"; }

Sidecar read_sidecar(const std::string& plan_path) {
  const std::string path = sidecar_path(plan_path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw EngineError(path + ": missing; a TensorRT plan needs its sidecar (model card, TensorRT version, GPU) next "
                      "to it -- copy it along with " + base_name(plan_path) + ", or rebuild with der-export --trt");
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) throw EngineError(path + ": cannot read; rebuild with der-export --trt");
  return Sidecar::from_json(text.str(), path);
}

std::vector<std::string> check_compatible(const Sidecar& s, const std::string& trt_version, const std::string& gpu_name,
                                          const std::string& compute_capability, const std::string& plan_path) {
  const std::string plan = base_name(plan_path);
  if (s.tensorrt_version != trt_version || s.compute_capability != compute_capability) {
    const std::string onnx = s.onnx_name.empty() ? "model.onnx" : s.onnx_name;
    throw EngineError(plan + " was built with TensorRT " + s.tensorrt_version + " on " + s.gpu_name + " (" +
                      sm(s.compute_capability) + "); this machine has TensorRT " + trt_version + " on " + gpu_name +
                      " (" + sm(compute_capability) + "); rebuild it from the ONNX: der-export " + onnx + " --trt");
  }
  auto trim = [](std::string t) {
    t.erase(0, t.find_first_not_of(" \t\r\n"));
    t.erase(t.find_last_not_of(" \t\r\n") + 1);
    return t;
  };
  if (trim(s.gpu_name) != trim(gpu_name))
    return {plan + " was built on " + s.gpu_name + " and runs on " + gpu_name + " (same " + sm(compute_capability) +
            "); TensorRT does not guarantee performance across GPU models -- rebuild here for best results"};
  return {};
}

}  // namespace der
