// Model card parsing: the rules of der_deploy/card.py (ModelCard.from_dict, __post_init__, validate), in order,
// with the same messages. JSON numbers keep their kind: 448.0 is not an integer size, as in Python.
#include "der/card.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "der/error.hpp"

namespace der {
namespace {

using Json = nlohmann::ordered_json;

const char* const kFields[] = {"classes",       "arch",       "input_size",     "interpolation",
                               "mean",          "std",        "channel_order",  "thresholds",
                               "format_version", "provenance", "decode"};
const char* const kInterpolations[] = {"nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"};

// Python's repr() of a JSON value, for messages ("'bilinaer'", "[448, 448]").
std::string repr(const Json& v) {
  if (v.is_string()) return "'" + v.get<std::string>() + "'";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_array()) {
    std::string out = "(";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + repr(v[i]);
    return out + (v.size() == 1 ? ",)" : ")");
  }
  return v.dump();
}

bool is_int(const Json& v) { return v.is_number_integer(); }  // bool is not a number in nlohmann
bool is_number(const Json& v) { return v.is_number(); }

// str(c) of a class name as ModelCard.__post_init__ does for JSON scalars.
std::string class_name(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_number_integer()) return v.dump();
  // Python would print str(1.5) / str([..]); names like that are not something a der-deploy export writes.
  throw CardError("model card class names must be strings, got " + v.dump());
}

}  // namespace

Card Card::from_json(const std::string& text) {
  Json data;
  try {
    data = Json::parse(text);
  } catch (const Json::parse_error& err) {
    throw CardError(std::string("model card is not valid JSON: ") + err.what());
  }
  if (!data.is_object()) {
    static const char* names[] = {"NoneType", "dict", "list", "str", "bool", "int", "int", "float", "bytes", "?"};
    throw CardError(std::string("model card must be a JSON object, got ") +
                    names[std::min<std::size_t>(static_cast<std::size_t>(data.type()), 9)]);
  }
  std::set<std::string> unknown;
  for (auto it = data.begin(); it != data.end(); ++it) {
    bool known = false;
    for (const char* f : kFields) known = known || it.key() == f;
    if (!known) unknown.insert(it.key());
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& u : unknown) list += (list.empty() ? "" : ", ") + u;
    throw CardError("model card has unknown fields: " + list);
  }
  if (!data.contains("classes")) throw CardError("model card has no 'classes' field");
  if (!data.contains("format_version"))
    throw CardError("model card has no 'format_version' field; it was not written by der-deploy");

  Card card;
  // validate(): format version first.
  const Json& fv = data["format_version"];
  bool version_ok = (fv.is_number() && fv.get<double>() == kCardFormatVersion) || (fv.is_boolean() && fv.get<bool>());
  if (!version_ok)
    throw CardError("model card format version " + repr(fv) + " is not supported (this der-deploy reads version " +
                    std::to_string(kCardFormatVersion) + "); re-export the model with this der-deploy version");

  const Json& classes = data["classes"];
  if (!classes.is_array() || classes.empty())
    throw CardError("model card has no classes; it needs an ordered list of class names");
  for (const auto& c : classes) card.classes.push_back(class_name(c));
  std::set<std::string> seen, dup;
  for (const auto& c : card.classes)
    if (!seen.insert(c).second) dup.insert(c);
  if (!dup.empty()) {
    std::string list;
    for (const auto& d : dup) list += (list.empty() ? "" : ", ") + d;
    throw CardError("model card has duplicate class names: " + list);
  }

  if (data.contains("arch")) {
    const Json& a = data["arch"];
    if (!a.is_string() || a.get<std::string>().empty())
      throw CardError("model card arch must be a non-empty string such as 'resnet101'");
    card.arch = a.get<std::string>();
  }
  if (data.contains("input_size")) {
    const Json& s = data["input_size"];
    bool ok = s.is_array() && s.size() == 2 && is_int(s[0]) && is_int(s[1]) && s[0].get<long long>() > 0 &&
              s[1].get<long long>() > 0 && s[0].get<long long>() < (1 << 20) && s[1].get<long long>() < (1 << 20);
    if (!ok) throw CardError("model card input_size must be two positive integers (H, W), got " + repr(s));
    card.height = s[0].get<int>();
    card.width = s[1].get<int>();
  }
  if (data.contains("interpolation")) {
    const Json& i = data["interpolation"];
    bool ok = false;
    for (const char* name : kInterpolations) ok = ok || (i.is_string() && i.get<std::string>() == name);
    if (!ok)
      throw CardError("model card interpolation " + repr(i) +
                      " is unknown; use one of nearest, bilinear, bicubic, lanczos, box, hamming");
    card.interpolation = parse_interpolation(i.get<std::string>());
  }
  if (data.contains("channel_order")) {
    const Json& c = data["channel_order"];
    if (!c.is_string() || (c.get<std::string>() != "RGB" && c.get<std::string>() != "BGR"))
      throw CardError("model card channel_order " + repr(c) + " is unknown; use RGB or BGR");
    card.channel_order = c.get<std::string>();
  }
  for (const char* name : {"mean", "std"}) {
    if (!data.contains(name)) continue;
    const Json& v = data[name];
    bool ok = v.is_array() && v.size() == 3;
    for (std::size_t k = 0; ok && k < 3; ++k) ok = is_number(v[k]) && std::isfinite(v[k].get<double>());
    if (!ok) throw CardError(std::string("model card ") + name + " must be three finite numbers, got " + repr(v));
    auto& dst = std::string(name) == "mean" ? card.mean : card.std_dev;
    for (std::size_t k = 0; k < 3; ++k) dst[k] = v[k].get<double>();
  }
  if (card.std_dev[0] <= 0 || card.std_dev[1] <= 0 || card.std_dev[2] <= 0) {
    Json s = Json::array({card.std_dev[0], card.std_dev[1], card.std_dev[2]});
    throw CardError("model card std must be positive, got " + repr(data.contains("std") ? data["std"] : s));
  }
  const std::size_t c = card.classes.size();
  if (!data.contains("thresholds") || data["thresholds"].is_null()) {
    card.thresholds.assign(c, 0.5);
  } else {
    const Json& t = data["thresholds"];
    if (!t.is_array() || t.size() != c)
      throw CardError("model card has " + (t.is_array() ? std::to_string(t.size()) : repr(t)) + " thresholds for " +
                      std::to_string(c) + " classes; give one threshold per class");
    for (const auto& v : t) {
      if (!(v.is_number() || v.is_boolean())) throw CardError("model card thresholds must be probabilities in [0, 1]");
      double x = v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>();
      if (!(x >= 0.0 && x <= 1.0)) throw CardError("model card thresholds must be probabilities in [0, 1]");
      card.thresholds.push_back(x);
    }
  }
  if (data.contains("provenance")) {
    if (!data["provenance"].is_object()) throw CardError("model card provenance must be a mapping");
    card.provenance_json = data["provenance"].dump();
  }
  if (data.contains("decode")) {
    const Json& m = data["decode"];
    if (!m.is_string() || (m.get<std::string>() != "full" && m.get<std::string>() != "draft"))
      throw CardError("model card decode " + repr(m) + " is unknown; use full or draft");
    card.decode = m.get<std::string>();
  }
  return card;
}

DecodeOptions Card::decode_options(long long max_pixels) const {
  DecodeOptions o;
  if (decode == "draft") {
    o.draft_width = width;
    o.draft_height = height;
  }
  o.max_pixels = max_pixels;
  return o;
}

std::string Card::to_json() const {
  Json j;
  j["classes"] = classes;
  j["arch"] = arch;
  j["input_size"] = {height, width};
  j["interpolation"] = interpolation_name(interpolation);
  j["mean"] = {mean[0], mean[1], mean[2]};
  j["std"] = {std_dev[0], std_dev[1], std_dev[2]};
  j["channel_order"] = channel_order;
  j["thresholds"] = thresholds;
  j["format_version"] = format_version;
  j["provenance"] = Json::parse(provenance_json);
  if (decode != "full") j["decode"] = decode;  // omitted at its default, as ModelCard.to_dict does
  return j.dump(2);
}

}  // namespace der
