/* der_runtime C ABI: DER inference from any language through FFI (ctypes, cffi, JNI, Go cgo, ...).
 *
 * Exported by libder_runtime.so itself (one library, one copy of the runtime; no C++ type crosses this
 * header). Every function returns DER_OK (0) or an error code; the message, one line naming the file and the
 * fix, is der_last_error(handle) -- or der_last_error(NULL) for a failed der_create. Strings returned through
 * `char** out` are UTF-8 JSON owned by the caller: release them with der_free_string. The same results come
 * typed as der_prediction records (der_predict_*_typed), owned by the library until der_release_predictions.
 *
 * Paths in the JSON are written as der-infer writes them: valid UTF-8 as is, "\" as "\\", other bytes as \xNN.
 * A handle may be used from several threads at once; der_last_error(handle) then reports the most recent
 * failure on that handle (read it from the thread that failed before making another call). */
#ifndef DER_DER_H
#define DER_DER_H

#include <stddef.h>
#include <stdint.h>

#include "der/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct der_predictor der_predictor;

enum der_status {
  DER_OK = 0,
  DER_ERROR = 1,               /* any other der::Error (bad rule, bad argument) */
  DER_ERROR_CARD = 2,          /* model card malformed or not supported */
  DER_ERROR_IMAGE = 3,         /* pixels/file that cannot be used (der_predict_files reports these per record) */
  DER_ERROR_ENGINE = 4,        /* engine file missing, corrupt or built for another machine */
  DER_ERROR_BACKEND = 5,       /* TensorRT / CUDA execution provider not available */
  DER_ERROR_INVALID_ARGUMENT = 6,
  DER_ERROR_INTERNAL = 7       /* unexpected (out of memory, ...) */
};

/* "0.1.0" */
DER_API const char* der_version(void);

/* Open an engine (.onnx for ONNX Runtime or OpenVINO, .plan + .plan.json for TensorRT). options_json may be NULL
 * or a JSON object with any of these keys (der::Options; absent keys keep these defaults):
 *   "backend": "auto"          auto (by suffix) | "ort" | "trt" | "openvino" (the .onnx on the CPU)
 *   "precision": ""            openvino only: "fp32" | "bf16" | "fp16"; one this CPU lacks natively is
 *                              DER_ERROR_BACKEND, never a silent FP32 run
 *   "mode": "latency"          openvino only: "latency" | "throughput" (each batch split over OpenVINO's optimal
 *                              number of infer requests, run concurrently)
 *   "cache_dir": ""            openvino only: compiled-model cache folder, created if missing ("" = none); one
 *                              subfolder per model file content, so a replaced model is never served stale
 *   "device": 0                GPU index for TensorRT and ONNX Runtime's CUDA provider (>= 0)
 *   "providers": ["cpu"]       ONNX Runtime providers in priority order: "cpu" or ["cuda", "cpu"]
 *   "intra_op_threads": 0      ONNX Runtime intra-op / OpenVINO inference threads (0: the runtime's choice)
 *   "batch_size": 8            images per engine call
 *   "decode_threads": -1       decode + preprocess threads (-1: min(4, cores); 0: decode in the calling thread)
 *   "max_pixels": 40000000     larger images are per-file error records, as der-infer --max-pixels (0: no limit)
 * An unknown key or value, or a setting the backend that runs does not have (e.g. "mode" without "openvino"), is
 * DER_ERROR (DER_ERROR_ENGINE where it is about the engine file); a value of the wrong JSON type, or malformed JSON,
 * is DER_ERROR_INVALID_ARGUMENT. der_last_error(NULL) says which, in one line. */
DER_API int der_create(const char* engine_path, const char* options_json, der_predictor** out);

/* The model card as JSON (classes, input_size, interpolation, mean, std, channel_order, thresholds, ...). */
DER_API int der_card_json(der_predictor* handle, char** out_json);

/* Decision rule: threshold < 0 (or NaN) means "the card's per-class thresholds"; top_k <= 0 means "no top-k".
 * Writes a JSON array with one record per path, in order: {"path", "labels", "scores"} or {"path", "error"}. */
DER_API int der_predict_files(der_predictor* handle, const char* const* paths, size_t n, double threshold,
                              int top_k, char** out_json);

/* RGB8 pixels (row stride in bytes; 0 means 3 * width). Writes one record {"labels", "scores"}. */
DER_API int der_predict_pixels(der_predictor* handle, const uint8_t* rgb, int width, int height, size_t stride,
                               double threshold, int top_k, char** out_json);

/* Probabilities for an already preprocessed float32 batch (n, 3, H, W): writes n * classes floats to out
 * (out_len is its capacity in floats). */
DER_API int der_scores(der_predictor* handle, const float* nchw, size_t n, float* out, size_t out_len);

/* --- typed results: the records of der_predict_files / der_predict_pixels without JSON ------------------------ */

/* One record. Every pointer lies in one block owned by the library (see der_release_predictions); arrays
 * that would be empty are NULL. */
typedef struct der_prediction {
  const char* path;           /* the path exactly as given ("" for pixels) */
  const char* error;          /* NULL, or the JSON record's "error" text (UTF-8, the path written as in the
                               * JSON); then there are no labels and no scores */
  size_t num_labels;
  const int* label_ids;       /* class indices (card order), by descending score, ties in class order */
  const char* const* labels;  /* the same classes by name */
  size_t num_scores;          /* the card's class count (0 on error) */
  const float* scores;        /* every class's probability, card order */
} der_prediction;

/* The card's class names in order; valid until der_destroy(handle). */
DER_API int der_classes(der_predictor* handle, const char* const** out_names, size_t* out_n);

/* der_predict_files typed: *out = n records (NULL when n is 0), in order; a file that cannot be read is a
 * record with error set, not a failed call. Release with der_release_predictions(*out, *out_n). On a failed
 * call *out is NULL and nothing is to be released (as for der_predict_pixels_typed). */
DER_API int der_predict_files_typed(der_predictor* handle, const char* const* paths, size_t n, double threshold,
                                    int top_k, der_prediction** out, size_t* out_n);

/* der_predict_pixels typed: *out = one record; release with der_release_predictions(*out, 1). */
DER_API int der_predict_pixels_typed(der_predictor* handle, const uint8_t* rgb, int width, int height,
                                     size_t stride, double threshold, int top_k, der_prediction** out);

/* Frees records returned by der_predict_*_typed (n as returned; NULL is a no-op). */
DER_API void der_release_predictions(der_prediction* records, size_t n);

DER_API void der_free_string(char* s);
DER_API const char* der_last_error(const der_predictor* handle);
DER_API void der_destroy(der_predictor* handle);

#ifdef __cplusplus
}
#endif

#endif /* DER_DER_H */
