// normalize/preprocess with the float32 arithmetic of der_deploy.images.preprocess: scale = 1 / (255 * std)
// and bias = mean / std computed in double and rounded to float, then float(pixel) * scale - bias in float32
// (two roundings, never fused: the build uses -ffp-contract=off). With 256 possible pixel values per channel
// the whole computation is a 256-entry table per channel, which is exact and fast.
#include <string>

#include "der/error.hpp"
#include "der/image.hpp"
#include "decode_internal.hpp"
#include "resize_internal.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DER_NORMALIZE_AVX2 1
#endif

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

#ifdef DER_NORMALIZE_AVX2
// The same two float32 operations as the table (the product rounded, then the bias subtracted: separate
// vmulps/vsubps, and the target has no FMA to contract them into), eight pixels per step; returns the pixels done.
__attribute__((target("avx2"))) int normalize_row_avx2(const std::uint8_t* in, int w, const float scale[3],
                                                       const float bias[3], float* o0, float* o1, float* o2) {
  float* const outs[3] = {o0, o1, o2};
  __m128i lo_mask[3], hi_mask[3];
  for (int c = 0; c < 3; ++c) {
    alignas(16) char lo[16], hi[16];
    for (int i = 0; i < 16; ++i) {
      const int at = 3 * i + c;  // byte of pixel i, channel c, within the 24 bytes of 8 pixels
      lo[i] = i < 8 && at < 16 ? static_cast<char>(at) : static_cast<char>(0x80);
      hi[i] = i < 8 && at >= 16 ? static_cast<char>(at - 16) : static_cast<char>(0x80);
    }
    lo_mask[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(lo));
    hi_mask[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(hi));
  }
  int x = 0;
  for (; x + 8 <= w; x += 8, in += 24) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 16));
    for (int c = 0; c < 3; ++c) {
      const __m128i v = _mm_or_si128(_mm_shuffle_epi8(a, lo_mask[c]), _mm_shuffle_epi8(b, hi_mask[c]));
      const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
      const __m256 prod = _mm256_mul_ps(f, _mm256_set1_ps(scale[c]));
      _mm256_storeu_ps(outs[c] + x, _mm256_sub_ps(prod, _mm256_set1_ps(bias[c])));
    }
  }
  return x;
}
#endif

}  // namespace

void normalize(const Image& src, const double mean[3], const double std[3], bool bgr, float* out) {
  if (!src.data || src.width <= 0 || src.height <= 0)
    throw Error("normalize: the source image is empty; pass an RGB8 image with width and height >= 1");
  for (int c = 0; c < 3; ++c)
    if (!(std[c] > 0))
      throw Error("normalize: std[" + std::to_string(c) + "] must be positive; fix the model card");
  const int w = src.width, h = src.height;
  const std::size_t plane = static_cast<std::size_t>(w) * h;
  float table[3][256], scale[3], bias[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    bias[c] = static_cast<float>(mean[c] / std[c]);
    for (int v = 0; v < 256; ++v) {
      volatile float prod = static_cast<float>(v) * scale[c];  // force the float32 rounding of the product
      table[c][v] = prod - bias[c];
    }
  }
  // The AVX2 rows follow the resize switch (DER_IMAGE_SIMD=0 turns both off).
  const bool simd = detail::resize_simd_enabled();
  // BGR only reverses the output planes; mean/std stay indexed by the RGB source channel.
  float* o0 = out + (bgr ? 2 : 0) * plane;
  float* o1 = out + plane;
  float* o2 = out + (bgr ? 0 : 2) * plane;
  for (int y = 0; y < h; ++y) {
    const std::uint8_t* in = src.data + static_cast<std::size_t>(y) * src.row_bytes();
    int done = 0;
#ifdef DER_NORMALIZE_AVX2
    if (simd) done = normalize_row_avx2(in, w, scale, bias, o0, o1, o2);
#endif
    normalize_row(in + 3 * static_cast<std::size_t>(done), w - done, table, o0 + done, o1 + done, o2 + done);
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
