// der-infer's JSON records, written byte for byte as the Python der-infer writes them; shared by the CLI
// (der-infer-cpp) and the C ABI's JSON functions.
#pragma once

#include <string>

#include "der/export.h"
#include "der/predictor.hpp"

namespace der {

// The error text of a failed prediction as written everywhere: path_text of "<path>: <reason>".
DER_API std::string error_text(const Prediction& p);

// One JSON record as Python's json.dumps writes it ({"path": ..., "labels": [...], "scores": {...}} or
// {"path": ..., "error": ...}; ", " and ": " separators, ASCII-escaped strings, shortest round-trip floats).
DER_API std::string record_json(const Prediction& p, bool with_path);

// A JSON number for a float32 score exactly as Python's json.dumps(float(score)) writes it.
DER_API std::string json_number(float v);

}  // namespace der
