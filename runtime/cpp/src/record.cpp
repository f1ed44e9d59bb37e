#include "record.hpp"

#include <nlohmann/json.hpp>

#include "der/paths.hpp"

namespace der {
namespace {
std::string jstr(const std::string& s) { return nlohmann::json(s).dump(-1, ' ', true); }
}  // namespace

// As Prediction.to_dict in Python: path_text of the whole message, so the quoted path is lossless too.
std::string error_text(const Prediction& p) { return path_text(p.error); }

std::string json_number(float v) { return nlohmann::json(static_cast<double>(v)).dump(); }

std::string record_json(const Prediction& p, bool with_path) {
  std::string out = "{";
  if (with_path) out += "\"path\": " + jstr(path_text(p.path)) + ", ";
  if (!p.ok()) return out + "\"error\": " + jstr(error_text(p)) + "}";
  out += "\"labels\": [";
  for (std::size_t i = 0; i < p.labels.size(); ++i) out += (i ? ", " : "") + jstr(p.labels[i]);
  out += "], \"scores\": {";
  for (std::size_t i = 0; i < p.scores.size(); ++i)
    out += (i ? ", " : "") + jstr(p.scores[i].first) + ": " + json_number(p.scores[i].second);
  return out + "}}";
}

}  // namespace der
