// der::Predictor: an engine file (.onnx for ONNX Runtime or OpenVINO, .plan + .plan.json for TensorRT) + its card
// -> labels with scores, one Prediction per input, in input order. Mirrors der_deploy.runtime.Predictor.
//
// Thread-safety: one Predictor may be shared by several threads. predict()/scores() only read the card and
// call the runner, whose infer() is safe to call concurrently (ONNX Runtime's Session::Run is thread-safe; the
// OpenVINO runner gives each call its own infer requests; the TensorRT runner serialises calls on its one execution
// context with a mutex). The decode pool is shared and internally locked. Constructing and destroying a Predictor
// are not concurrent operations.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "der/card.hpp"
#include "der/error.hpp"
#include "der/export.h"
#include "der/image.hpp"
#include "der/options.hpp"

namespace der {

// Decision rule (Predictor.decide in Python):
//   neither: every class whose score reaches its card threshold;  threshold: the same with one threshold T;
//   top_k alone: the K highest scores whatever their value;  both: the K most confident classes reaching T.
// Labels come by descending score, ties in class order.
struct Rule {
  std::optional<double> threshold;
  std::optional<int> top_k;
};

struct Prediction {
  std::string path;                                   // as given (empty for pixels)
  std::vector<std::string> labels;                    // by descending score
  std::vector<std::pair<std::string, float>> scores;  // every class, card order (empty on error)
  std::string error;                                  // "<path>: <reason>" when the input could not be read
  bool ok() const { return error.empty(); }
};

// Timings of one predict call (the numbers der-infer prints).
struct Stats {
  std::size_t images = 0, failed = 0, batches = 0;
  int workers = 0, batch_size = 0;
  double wall_s = 0, engine_s = 0, wait_s = 0;
};

class Runner;

class DER_API Predictor {
 public:
  Predictor(const std::string& engine_path, const Options& options = Options());
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  const Card& card() const { return card_; }
  const std::string& engine_path() const { return path_; }
  const Options& options() const { return options_; }
  std::string backend_name() const;  // "onnxruntime", "tensorrt" or "openvino"
  // What ran, read back from the engine: backend_name(), or for OpenVINO e.g. "OpenVINO 2026.4 CPU fp32,
  // throughput, 2 requests, cached" (the compiled model's execution devices, inference precision, performance hint,
  // infer requests, and whether it came from cache_dir).
  std::string backend_description() const;

  // Files, decoded by the pool while the engine runs; unreadable files give a Prediction with error.
  std::vector<Prediction> predict(const std::vector<std::string>& paths, const Rule& rule = Rule()) const;
  // The same, streamed in input order to `sink`; return false from `sink` to stop early.
  void predict_stream(const std::vector<std::string>& paths, const Rule& rule,
                      const std::function<bool(Prediction&&)>& sink, Stats* stats = nullptr) const;
  // Pixels a service already has (RGB8); preprocessed with the card like a decoded file.
  Prediction predict(const Image& image, const Rule& rule = Rule()) const;
  // Probabilities (n * C, row-major) for an already preprocessed float32 batch (n, 3, H, W).
  std::vector<float> scores(const float* nchw, std::size_t n) const;
  // Labels for one row of C probabilities.
  std::vector<std::string> decide(const float* probs, const Rule& rule = Rule()) const;
  // Throws der::Error for a threshold outside [0, 1] or top_k outside 1..C.
  void check_rule(const Rule& rule) const;

 private:
  struct DER_LOCAL Decoded;
  DER_LOCAL Decoded decode_batch(const std::vector<std::string>& paths) const;
  DER_LOCAL Prediction make_prediction(std::string path, const float* probs, const Rule& rule) const;

  std::string path_;
  Options options_;
  Card card_;
  std::unique_ptr<Runner> runner_;
  std::string output_name_;  // "scores" (probabilities) or "logits" (sigmoid applied here)
  class DER_LOCAL Pool;
  std::unique_ptr<Pool> pool_;
};

// The decision rule on its own (used by Predictor::decide); `probs` has card.num_classes() entries.
DER_API std::vector<std::size_t> decide_indices(const float* probs, const std::vector<double>& card_thresholds,
                                                const Rule& rule);

// The library version ("0.1.0").
DER_API const char* version();

}  // namespace der
