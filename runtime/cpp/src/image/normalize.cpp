// normalize/preprocess with the float32 arithmetic of der_deploy.images.preprocess: scale = 1 / (255 * std)
// and bias = mean / std computed in double and rounded to float, then float(pixel) * scale - bias in float32
// (two roundings, never fused: the build uses -ffp-contract=off). With 256 possible pixel values per channel
// the whole computation is a 256-entry table per channel, which is exact and fast.
#include <string>

#include "der/error.hpp"
#include "der/image.hpp"
#include "decode_internal.hpp"

namespace der {
namespace {

// A plain lookup loop; GCC's -O3 vectoriser turns the stride-3 gathers into slower code, so it is kept scalar.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void normalize_row(const std::uint8_t* in, int w, const float (&table)[3][256], float* __restrict o0,
                   float* __restrict o1, float* __restrict o2) {
  for (int x = 0; x < w; ++x, in += 3) {
    o0[x] = table[0][in[0]];
    o1[x] = table[1][in[1]];
    o2[x] = table[2][in[2]];
  }
}

}  // namespace

void normalize(const Image& src, const double mean[3], const double std[3], bool bgr, float* out) {
  if (!src.data || src.width <= 0 || src.height <= 0)
    throw Error("normalize: the source image is empty; pass an RGB8 image with width and height >= 1");
  for (int c = 0; c < 3; ++c)
    if (!(std[c] > 0))
      throw Error("normalize: std[" + std::to_string(c) + "] must be positive; fix the model card");
  const int w = src.width, h = src.height;
  const std::size_t plane = static_cast<std::size_t>(w) * h;
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    const float scale = static_cast<float>(1.0 / (255.0 * std[c]));
    const float bias = static_cast<float>(mean[c] / std[c]);
    for (int v = 0; v < 256; ++v) {
      volatile float prod = static_cast<float>(v) * scale;  // force the float32 rounding of the product
      table[c][v] = prod - bias;
    }
  }
  // BGR only reverses the output planes; mean/std stay indexed by the RGB source channel.
  float* o0 = out + (bgr ? 2 : 0) * plane;
  float* o1 = out + plane;
  float* o2 = out + (bgr ? 0 : 2) * plane;
  for (int y = 0; y < h; ++y) {
    const std::uint8_t* in = src.data + static_cast<std::size_t>(y) * src.row_bytes();
    normalize_row(in, w, table, o0, o1, o2);
    o0 += w;
    o1 += w;
    o2 += w;
  }
}

void preprocess(const Image& src, int height, int width, Interpolation interp, const double mean[3],
                const double std[3], bool bgr, float* out) {
  if (src.width == width && src.height == height) {
    normalize(src, mean, std, bgr, out);
    return;
  }
  thread_local Bitmap resized;  // reused: no large allocation per image
  detail::resize_into(src, width, height, interp, resized);
  normalize(resized.view(), mean, std, bgr, out);
  if (resized.pixels.capacity() > (std::size_t(64) << 20)) std::vector<std::uint8_t>().swap(resized.pixels);
}

}  // namespace der
