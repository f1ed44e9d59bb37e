/* der_runtime C ABI: DER inference from any language through FFI (ctypes, cffi, JNI, Go cgo, ...).
 *
 * Exported by libder_runtime.so itself (one library, one copy of the runtime; no C++ type crosses this
 * header). Every function returns DER_OK (0) or an error code; the message, one line naming the file and the
 * fix, is der_last_error(handle) -- or der_last_error(NULL) for a failed der_create. Strings returned through
 * `char** out` are UTF-8 JSON owned by the caller: release them with der_free_string.
 *
 * Paths in the JSON are written as der-infer writes them: valid UTF-8 as is, "\" as "\\", other bytes as \xNN.
 * A handle may be used from several threads at once; der_last_error(handle) then reports the most recent
 * failure on that handle (read it from the thread that failed before making another call). */
#ifndef DER_DER_H
#define DER_DER_H

#include <stddef.h>
#include <stdint.h>

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
const char* der_version(void);

/* Open an engine (.onnx for ONNX Runtime, .plan + .plan.json for TensorRT). options_json may be NULL or e.g.
 * {"backend": "auto", "providers": ["cpu"], "intra_op_threads": 0, "batch_size": 8, "decode_threads": -1}. */
int der_create(const char* engine_path, const char* options_json, der_predictor** out);

/* The model card as JSON (classes, input_size, interpolation, mean, std, channel_order, thresholds, ...). */
int der_card_json(der_predictor* handle, char** out_json);

/* Decision rule: threshold < 0 (or NaN) means "the card's per-class thresholds"; top_k <= 0 means "no top-k".
 * Writes a JSON array with one record per path, in order: {"path", "labels", "scores"} or {"path", "error"}. */
int der_predict_files(der_predictor* handle, const char* const* paths, size_t n, double threshold, int top_k,
                      char** out_json);

/* RGB8 pixels (row stride in bytes; 0 means 3 * width). Writes one record {"labels", "scores"}. */
int der_predict_pixels(der_predictor* handle, const uint8_t* rgb, int width, int height, size_t stride,
                       double threshold, int top_k, char** out_json);

/* Probabilities for an already preprocessed float32 batch (n, 3, H, W): writes n * classes floats to out
 * (out_len is its capacity in floats). */
int der_scores(der_predictor* handle, const float* nchw, size_t n, float* out, size_t out_len);

void der_free_string(char* s);
const char* der_last_error(const der_predictor* handle);
void der_destroy(der_predictor* handle);

#ifdef __cplusplus
}
#endif

#endif /* DER_DER_H */
