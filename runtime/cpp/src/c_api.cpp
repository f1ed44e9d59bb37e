// The C ABI of der.h over der::Predictor: exceptions become status codes plus a per-handle message.
#include "der/der.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <nlohmann/json.hpp>

#include "der/paths.hpp"
#include "der/predictor.hpp"
#include "record.hpp"

struct der_predictor {
  std::unique_ptr<der::Predictor> predictor;
  mutable std::mutex mutex;
  std::string last_error;
};

namespace {

thread_local std::string create_error;  // der_last_error(NULL): failures of der_create in this thread

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
    der::Options opts;
    if (options_json && *options_json) {
      const auto j = nlohmann::json::parse(options_json);
      if (!j.is_object()) throw der::Error("der_create: options must be a JSON object");
      for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& k = it.key();
        if (k == "backend") opts.backend = it->get<std::string>();
        else if (k == "providers") opts.providers = it->is_string() ? std::vector<std::string>{it->get<std::string>()}
                                                                   : it->get<std::vector<std::string>>();
        else if (k == "intra_op_threads") opts.intra_op_threads = it->get<int>();
        else if (k == "batch_size") opts.batch_size = it->get<int>();
        else if (k == "decode_threads") opts.decode_threads = it->get<int>();
        else throw der::Error("der_create: unknown option '" + k +
                              "'; use backend, providers, intra_op_threads, batch_size, decode_threads");
      }
    }
    auto h = std::make_unique<der_predictor>();
    h->predictor = std::make_unique<der::Predictor>(engine_path, opts);
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

void der_free_string(char* s) { std::free(s); }

const char* der_last_error(const der_predictor* h) {
  if (!h) return create_error.c_str();
  std::lock_guard<std::mutex> lock(h->mutex);
  return h->last_error.c_str();  // stable until the next failure on this handle
}

void der_destroy(der_predictor* h) { delete h; }

}  // extern "C"
