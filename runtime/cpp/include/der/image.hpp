// Decoding and preprocessing, bit-exact with der_deploy.images (load_image + preprocess) in Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "der/export.h"

namespace der {

// Pixels a caller already has: 8-bit RGB, row-major, `stride` bytes between rows (0 means 3 * width).
// A view: it does not own `data`.
struct Image {
  const std::uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  std::size_t stride = 0;
  std::size_t row_bytes() const { return stride ? stride : static_cast<std::size_t>(width) * 3; }
};

// An owned, tightly packed RGB8 image (stride = 3 * width).
struct Bitmap {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;
  Image view() const { return Image{pixels.data(), width, height, static_cast<std::size_t>(width) * 3}; }
};

enum class Interpolation { Nearest, Bilinear, Bicubic, Lanczos, Box, Hamming };

// "nearest", "bilinear", ... as in the model card; throws CardError for a name this SDK cannot honour.
DER_API Interpolation parse_interpolation(const std::string& name);
DER_API const char* interpolation_name(Interpolation interp);

// The service default of DecodeOptions::max_pixels (der_deploy.images.DEFAULT_MAX_PIXELS; README "Large images").
constexpr long long kDefaultMaxPixels = 40000000;

// How to decode (der_deploy.images.load_image's `draft` and `max_pixels`); the default decodes in full, unlimited.
struct DecodeOptions {
  // > 0: shrink-on-load. A JPEG is decoded DCT-scaled to the smallest 1/2, 1/4 or 1/8 that still covers this
  // upright size (Pillow's Image.draft rule; the sides are swapped for EXIF orientations 5-8). Other formats: full.
  int draft_width = 0;
  int draft_height = 0;
  // > 0: an image whose decoded size (DCT-scaled under draft, except progressive / non-interleaved JPEGs, which
  // count at full size) exceeds this many pixels is an ImageError "too large: ...", raised from its header.
  long long max_pixels = 0;
};

// Decode a file with the policy of der_deploy.images.load_image: upright (EXIF orientation applied), RGB,
// alpha dropped (not composited), 16-bit gray scaled, CMYK and palette converted; throws ImageError naming the
// file for an unreadable, non-image, truncated or corrupt file, a decompression bomb, or one over max_pixels.
DER_API Bitmap decode_file(const std::string& path, const DecodeOptions& options = DecodeOptions());
// The same for bytes already in memory; `name` is used in error messages.
DER_API Bitmap decode_memory(const std::uint8_t* data, std::size_t size, const std::string& name,
                             const DecodeOptions& options = DecodeOptions());

// Pillow's Image.resize((width, height), filter) byte for byte (8-bit fixed-point separable filters).
DER_API Bitmap resize(const Image& src, int width, int height, Interpolation interp);

// out[c][y][x] = float(pixel) * float(1 / (255 * std[c])) - float(mean[c] / std[c]), as float32 like numpy does;
// mean/std in RGB order; bgr=true reverses the output channels. `out` holds 3 * height * width floats (CHW).
DER_API void normalize(const Image& src, const double mean[3], const double std[3], bool bgr, float* out);

// resize to (height, width) when the size differs, then normalize: der_deploy.images.preprocess.
DER_API void preprocess(const Image& src, int height, int width, Interpolation interp, const double mean[3],
                        const double std[3], bool bgr, float* out);

// decode_file then preprocess in one call: der_deploy.images.load_and_preprocess. The same tensor as the two
// calls, but the intermediate images live in per-thread buffers reused from call to call, so a batch loop does
// no large allocation per image (those cost page faults: ~30% of the time at 448x448). Throws ImageError.
DER_API void load_and_preprocess(const std::string& path, int height, int width, Interpolation interp,
                                 const double mean[3], const double std[3], bool bgr, float* out,
                                 const DecodeOptions& options = DecodeOptions());

}  // namespace der
