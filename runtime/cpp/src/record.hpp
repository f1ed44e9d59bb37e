// The der-infer records, shared by the CLI and the C ABI (internal; not installed).
#pragma once

#include <string>

#include "der/predictor.hpp"

namespace der {

// The error text of a failed prediction as written everywhere: path_text of "<path>: <reason>".
std::string error_text(const Prediction& p);

// One JSON record as Python's json.dumps writes it ({"path": ..., "labels": [...], "scores": {...}} or
// {"path": ..., "error": ...}; ", " and ": " separators, ASCII-escaped strings, shortest round-trip floats).
std::string record_json(const Prediction& p, bool with_path);

// A JSON number for a float32 score exactly as Python's json.dumps(float(score)) writes it.
std::string json_number(float v);

}  // namespace der
