// The C ABI of der.h over der::Predictor: exceptions become status codes plus a per-handle message.
#include "der/der.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "der/paths.hpp"
#include "der/predictor.hpp"
#include "der/record.hpp"

struct der_predictor {
  std::unique_ptr<der::Predictor> predictor;
  std::vector<const char*> class_names;  // der_classes: pointers into predictor->card().classes
  std::unordered_map<std::string, int> class_ids;
  mutable std::mutex mutex;
  std::string last_error;
};

namespace {

thread_local std::string create_error;  // der_last_error(NULL): failures of der_create in this thread

// An option of the wrong JSON type: DER_ERROR_INVALID_ARGUMENT, like malformed JSON (the caller's bug, not a value).
struct BadOptionType : der::Error {
  using der::Error::Error;
};

void set_error(der_predictor* h, const std::string& msg) {
  if (!h) {
    create_error = msg;
    return;
  }
  std::lock_guard<std::mutex> lock(h->mutex);
  h->last_error = msg;
}

template <class F>
int guarded(der_predictor* h, F&& fn) {
  try {
    fn();
    return DER_OK;
  } catch (const BadOptionType& e) {
    set_error(h, e.what());
    return DER_ERROR_INVALID_ARGUMENT;
  } catch (const der::CardError& e) {
    set_error(h, e.what());
    return DER_ERROR_CARD;
  } catch (const der::ImageError& e) {
    set_error(h, e.what());
    return DER_ERROR_IMAGE;
  } catch (const der::EngineError& e) {
    set_error(h, e.what());
    return DER_ERROR_ENGINE;
  } catch (const der::BackendUnavailable& e) {
    set_error(h, e.what());
    return DER_ERROR_BACKEND;
  } catch (const der::Error& e) {
    set_error(h, e.what());
    return DER_ERROR;
  } catch (const nlohmann::json::exception& e) {
    set_error(h, std::string("invalid options JSON (") + e.what() + ")");
    return DER_ERROR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    set_error(h, "out of memory");
    return DER_ERROR_INTERNAL;
  } catch (const std::exception& e) {
    set_error(h, std::string("internal error: ") + e.what());
    return DER_ERROR_INTERNAL;
  }
}

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

der::Rule rule(double threshold, int top_k) {
  der::Rule r;
  if (!std::isnan(threshold) && threshold >= 0) r.threshold = threshold;
  if (top_k > 0) r.top_k = top_k;
  return r;
}

// Typed records in one malloc block, so der_release_predictions is one free(): the records first, then the
// label pointer arrays, the scores, the label ids and the strings (sections ordered by alignment). Labels point
// at one copy of each class name in the block.
der_prediction* pack(const der_predictor& h, const std::vector<der::Prediction>& preds) {
  const auto& classes = h.predictor->card().classes;
  std::vector<std::string> errors(preds.size());
  std::size_t n_labels = 0, n_scores = 0, n_chars = 0;
  for (const auto& c : classes) n_chars += c.size() + 1;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const auto& p = preds[i];
    if (!p.ok()) errors[i] = der::error_text(p);
    n_labels += p.labels.size();
    n_scores += p.scores.size();
    n_chars += p.path.size() + 1 + (p.ok() ? 0 : errors[i].size() + 1);
  }
  const std::size_t bytes = preds.size() * sizeof(der_prediction) + n_labels * sizeof(const char*) +
                            n_scores * sizeof(float) + n_labels * sizeof(int) + n_chars;
  std::unique_ptr<char, void (*)(void*)> block(static_cast<char*>(std::malloc(bytes)), std::free);
  if (!block) throw std::bad_alloc();
  auto* records = reinterpret_cast<der_prediction*>(block.get());
  auto* label_ptrs = reinterpret_cast<const char**>(records + preds.size());
  auto* scores = reinterpret_cast<float*>(label_ptrs + n_labels);
  auto* ids = reinterpret_cast<int*>(scores + n_scores);
  char* chars = reinterpret_cast<char*>(ids + n_labels);
  auto put = [&chars](const std::string& s) {
    std::memcpy(chars, s.c_str(), s.size() + 1);
    const char* at = chars;
    chars += s.size() + 1;
    return at;
  };
  std::vector<const char*> names;
  for (const auto& c : classes) names.push_back(put(c));
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const auto& p = preds[i];
    der_prediction& r = records[i];
    r.path = put(p.path);
    r.error = p.ok() ? nullptr : put(errors[i]);
    r.num_labels = p.labels.size();
    r.label_ids = p.labels.empty() ? nullptr : ids;
    r.labels = p.labels.empty() ? nullptr : label_ptrs;
    for (const auto& label : p.labels) {
      const int id = h.class_ids.at(label);
      *ids++ = id;
      *label_ptrs++ = names[static_cast<std::size_t>(id)];
    }
    r.num_scores = p.scores.size();
    r.scores = p.scores.empty() ? nullptr : scores;
    for (const auto& s : p.scores) *scores++ = s.second;  // Prediction.scores is in card order
  }
  block.release();  // now the caller's, until der_release_predictions
  return records;
}

// der_create's options_json -> der::Options; a key that is unknown or of the wrong type is one line naming it.
der::Options options_from_json(const char* text) {
  der::Options opts;
  if (!text || !*text) return opts;
  const auto j = nlohmann::json::parse(text);
  if (!j.is_object()) throw der::Error("der_create: options must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = *it;
    auto want = [&](bool ok, const char* what) {
      if (!ok) throw BadOptionType("der_create: option '" + k + "' must be " + what + ", got " + v.dump());
    };
    auto text_value = [&] { want(v.is_string(), "a string"); return v.get<std::string>(); };
    auto int_value = [&] {
      want(v.is_number_integer() && v.get<long long>() >= INT_MIN && v.get<long long>() <= INT_MAX, "an integer");
      return v.get<int>();
    };
    if (k == "backend") opts.backend = text_value();
    else if (k == "precision") opts.precision = text_value();
    else if (k == "mode") opts.mode = text_value();
    else if (k == "cache_dir") opts.cache_dir = text_value();
    else if (k == "device") opts.device = int_value();
    else if (k == "providers") {
      want(v.is_string() || (v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_string(); })),
           "a string or a list of strings");
      opts.providers = v.is_string() ? std::vector<std::string>{v.get<std::string>()} : v.get<std::vector<std::string>>();
    } else if (k == "intra_op_threads") opts.intra_op_threads = int_value();
    else if (k == "batch_size") opts.batch_size = int_value();
    else if (k == "decode_threads") opts.decode_threads = int_value();
    else if (k == "max_pixels") {
      want(v.is_number_integer(), "an integer");
      opts.max_pixels = v.get<long long>();
    } else throw der::Error("der_create: unknown option '" + k + "'; use backend, precision, mode, cache_dir, device, "
                            "providers, intra_op_threads, batch_size, decode_threads, max_pixels");
  }
  return opts;
}

#define DER_REQUIRE(cond, h, msg)                   \
  do {                                              \
    if (!(cond)) {                                  \
      set_error(h, msg);                            \
      return DER_ERROR_INVALID_ARGUMENT;            \
    }                                               \
  } while (0)

}  // namespace

extern "C" {

const char* der_version(void) { return der::version(); }

int der_create(const char* engine_path, const char* options_json, der_predictor** out) {
  DER_REQUIRE(engine_path && out, nullptr, "der_create: engine_path and out must not be NULL");
  *out = nullptr;
  return guarded(nullptr, [&] {
    const der::Options opts = options_from_json(options_json);
    auto h = std::make_unique<der_predictor>();
    h->predictor = std::make_unique<der::Predictor>(engine_path, opts);
    const auto& classes = h->predictor->card().classes;
    for (std::size_t i = 0; i < classes.size(); ++i) {
      h->class_names.push_back(classes[i].c_str());
      h->class_ids.emplace(classes[i], static_cast<int>(i));
    }
    *out = h.release();
  });
}

int der_card_json(der_predictor* h, char** out_json) {
  DER_REQUIRE(h && out_json, h, "der_card_json: handle and out_json must not be NULL");
  return guarded(h, [&] { *out_json = dup(h->predictor->card().to_json()); });
}

int der_predict_files(der_predictor* h, const char* const* paths, size_t n, double threshold, int top_k,
                      char** out_json) {
  DER_REQUIRE(h && out_json && (paths || n == 0), h, "der_predict_files: handle, paths and out_json must not be NULL");
  for (size_t i = 0; i < n; ++i) DER_REQUIRE(paths[i], h, "der_predict_files: a path is NULL");
  return guarded(h, [&] {
    std::vector<std::string> list(paths, paths + n);
    std::string text = "[";
    bool first = true;
    h->predictor->predict_stream(list, rule(threshold, top_k), [&](der::Prediction&& p) {
      text += (first ? "" : ", ") + der::record_json(p, true);
      first = false;
      return true;
    });
    *out_json = dup(text + "]");
  });
}

int der_predict_pixels(der_predictor* h, const uint8_t* rgb, int width, int height, size_t stride, double threshold,
                       int top_k, char** out_json) {
  DER_REQUIRE(h && rgb && out_json, h, "der_predict_pixels: handle, rgb and out_json must not be NULL");
  return guarded(h, [&] {
    der::Image img{rgb, width, height, stride};
    *out_json = dup(der::record_json(h->predictor->predict(img, rule(threshold, top_k)), false));
  });
}

int der_scores(der_predictor* h, const float* nchw, size_t n, float* out, size_t out_len) {
  DER_REQUIRE(h && nchw && out, h, "der_scores: handle, nchw and out must not be NULL");
  DER_REQUIRE(out_len >= n * h->predictor->card().num_classes(), h,
              "der_scores: out holds fewer than n * classes floats");
  return guarded(h, [&] {
    const auto probs = h->predictor->scores(nchw, n);
    std::memcpy(out, probs.data(), probs.size() * sizeof(float));
  });
}

int der_classes(der_predictor* h, const char* const** out_names, size_t* out_n) {
  DER_REQUIRE(h && out_names && out_n, h, "der_classes: handle, out_names and out_n must not be NULL");
  *out_names = h->class_names.data();
  *out_n = h->class_names.size();
  return DER_OK;
}

int der_predict_files_typed(der_predictor* h, const char* const* paths, size_t n, double threshold, int top_k,
                            der_prediction** out, size_t* out_n) {
  DER_REQUIRE(h && out && out_n && (paths || n == 0), h,
              "der_predict_files_typed: handle, paths, out and out_n must not be NULL");
  for (size_t i = 0; i < n; ++i) DER_REQUIRE(paths[i], h, "der_predict_files_typed: a path is NULL");
  *out = nullptr;
  *out_n = 0;
  return guarded(h, [&] {
    const auto preds = h->predictor->predict(std::vector<std::string>(paths, paths + n), rule(threshold, top_k));
    if (!preds.empty()) *out = pack(*h, preds);
    *out_n = preds.size();
  });
}

int der_predict_pixels_typed(der_predictor* h, const uint8_t* rgb, int width, int height, size_t stride,
                             double threshold, int top_k, der_prediction** out) {
  DER_REQUIRE(h && rgb && out, h, "der_predict_pixels_typed: handle, rgb and out must not be NULL");
  *out = nullptr;
  return guarded(h, [&] {
    der::Image img{rgb, width, height, stride};
    *out = pack(*h, {h->predictor->predict(img, rule(threshold, top_k))});
  });
}

void der_release_predictions(der_prediction* records, size_t) { std::free(records); }  // one block: see pack

void der_free_string(char* s) { std::free(s); }

const char* der_last_error(const der_predictor* h) {
  if (!h) return create_error.c_str();
  std::lock_guard<std::mutex> lock(h->mutex);
  return h->last_error.c_str();  // stable until the next failure on this handle
}

void der_destroy(der_predictor* h) { delete h; }

}  // extern "C"
