#include "der/record.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "der/paths.hpp"

namespace der {
namespace {
std::string jstr(const std::string& s) { return nlohmann::json(s).dump(-1, ' ', true); }
}  // namespace

// As Prediction.to_dict in Python: path_text of the whole message, so the quoted path is lossless too.
std::string error_text(const Prediction& p) { return path_text(p.error); }

// Python's repr(float(v)) -- what json.dumps writes: the shortest digits that round-trip, positional for
// exponents -4..15 ("0.1779172718524933", "1.0"), else "1.5e-05" / "1e+16"; NaN/Infinity as json.dumps does.
std::string json_number(float f) {
  const double v = static_cast<double>(f);
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.779172718524933e-01"
  const bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  const auto e_at = sci.find('e');
  const int exp = std::stoi(sci.substr(e_at + 1));
  std::string digits = sci.substr(0, e_at);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<std::size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(static_cast<std::size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(exp) + 1) + "." + digits.substr(static_cast<std::size_t>(exp) + 1);
    }
  } else {
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += e;
  }
  return neg ? "-" + out : out;
}

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
