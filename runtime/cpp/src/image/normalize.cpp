// normalize/preprocess with the float32 arithmetic of der_deploy.images.preprocess: scale = 1 / (255 * std)
// and bias = mean / std computed in double and rounded to float, then float(pixel) * scale - bias in float32
// (two roundings, never fused: the build uses -ffp-contract=off). With 256 possible pixel values per channel
// the whole computation is a 256-entry table per channel, which is exact and fast.
#include <string>

#include "der/error.hpp"
#include "der/image.hpp"

namespace der {

void normalize(const Image& src, const double mean[3], const double std[3], bool bgr, float* out) {
  if (!src.data || src.width <= 0 || src.height <= 0)
    throw Error("normalize: the source image is empty; pass an RGB8 image with width and height >= 1");
  for (int c = 0; c < 3; ++c)
    if (!(std[c] > 0))
      throw Error("normalize: std[" + std::to_string(c) + "] must be positive; fix the model card");
  const int w = src.width, h = src.height;
  const std::size_t plane = static_cast<std::size_t>(w) * h;
  for (int c = 0; c < 3; ++c) {
    const int s = bgr ? 2 - c : c;  // BGR only reverses the output planes; mean/std stay RGB-indexed
    const float scale = static_cast<float>(1.0 / (255.0 * std[s]));
    const float bias = static_cast<float>(mean[s] / std[s]);
    float table[256];
    for (int v = 0; v < 256; ++v) {
      volatile float prod = static_cast<float>(v) * scale;  // force the float32 rounding of the product
      table[v] = prod - bias;
    }
    float* o = out + c * plane;
    for (int y = 0; y < h; ++y) {
      const std::uint8_t* in = src.data + static_cast<std::size_t>(y) * src.row_bytes() + s;
      for (int x = 0; x < w; ++x) o[x] = table[in[3 * x]];
      o += w;
    }
  }
}

void preprocess(const Image& src, int height, int width, Interpolation interp, const double mean[3],
                const double std[3], bool bgr, float* out) {
  if (src.width == width && src.height == height) {
    normalize(src, mean, std, bgr, out);
    return;
  }
  const Bitmap resized = resize(src, width, height, interp);
  normalize(resized.view(), mean, std, bgr, out);
}

}  // namespace der
