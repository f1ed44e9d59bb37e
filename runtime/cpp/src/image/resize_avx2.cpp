// AVX2 versions of resize.cpp's two fixed-point passes, compiled for AVX2 per function (the rest of the library
// stays baseline x86-64) and used only when the CPU has it. They are exact, not approximations: every product
// pixel * weight and every sum is the same 32-bit integer arithmetic as the portable code (vpmulld keeps the low
// 32 bits, vpaddd wraps like the uint32 accumulators there), and the final `>> 22` plus two saturating packs
// equal the clamp to 0..255. Only the order in which lanes are visited differs.
#include "resize_internal.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define DER_AVX2 __attribute__((target("avx2")))

namespace der {
namespace detail {
namespace {

// Byte shuffle that spreads tap j's R, G, B (bytes 3j .. 3j+2 of a 16-byte load) into three int32 lanes.
DER_AVX2 inline __m256i tap_mask(int j) {
  const char z = static_cast<char>(0x80), a = static_cast<char>(3 * j);
  const __m128i m = _mm_setr_epi8(a, z, z, z, static_cast<char>(a + 1), z, z, z, static_cast<char>(a + 2), z, z, z,
                                  z, z, z, z);
  return _mm256_broadcastsi128_si256(m);
}

// Two rows per sweep: row y in the low 128-bit lane, row y+1 in the high one, so both share each weight.
// One output pixel gives {R, G, B, 0} int32 per lane; four of them are packed and stored together.
// K > 0: that many taps, unrolled; K == 0: t.fixed taps, counted at run time (large shrink factors).
template <int K>
DER_AVX2 void horizontal_block(const std::uint8_t* in0, const std::uint8_t* in1, const AxisTable& t, int x_end,
                               std::uint8_t* out0, std::uint8_t* out1) {
  const int taps = K > 0 ? K : t.fixed;
  const int loads = (taps + 4) / 5;  // a 16-byte load holds taps 0..4 (15 bytes)
  __m256i mask[5];
  for (int j = 0; j < 5; ++j) mask[j] = tap_mask(j);
  const __m256i half = _mm256_set1_epi32(static_cast<int>(kHalf));
  // Keep bytes 0-2, 4-6, 8-10, 12-14 of each lane: four {R, G, B, pad} pixels -> 12 bytes.
  const __m256i compact =
      _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
  const int ksize = t.ksize;
  for (int x = 0; x < x_end; x += 4) {
    __m256i px[4];
    for (int u = 0; u < 4; ++u) {
      const std::int32_t* k = &t.weights[static_cast<std::size_t>(x + u) * ksize];
      const std::size_t at = static_cast<std::size_t>(t.first[x + u]) * 3;
      __m256i acc = half;
      for (int l = 0; l < loads; ++l) {
        const __m256i v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in0 + at + 15 * l))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(in1 + at + 15 * l)), 1);
        for (int j = 0; j < 5 && 5 * l + j < taps; ++j) {
          const __m256i p = _mm256_shuffle_epi8(v, mask[j]);
          acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, _mm256_set1_epi32(k[5 * l + j])));
        }
      }
      px[u] = _mm256_srai_epi32(acc, kPrecisionBits);
    }
    const __m256i packed = _mm256_shuffle_epi8(
        _mm256_packus_epi16(_mm256_packs_epi32(px[0], px[1]), _mm256_packs_epi32(px[2], px[3])), compact);
    const __m128i lo = _mm256_castsi256_si128(packed), hi = _mm256_extracti128_si256(packed, 1);
    std::uint8_t* o0 = out0 + 3 * static_cast<std::size_t>(x);
    std::uint8_t* o1 = out1 + 3 * static_cast<std::size_t>(x);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(o0), lo);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(o1), hi);
    const int lo_tail = _mm_extract_epi32(lo, 2), hi_tail = _mm_extract_epi32(hi, 2);
    __builtin_memcpy(o0 + 8, &lo_tail, 4);
    __builtin_memcpy(o1 + 8, &hi_tail, 4);
  }
}

template <int K>
DER_AVX2 void horizontal_rows_avx2(const std::uint8_t* src, std::size_t stride, int rows, const AxisTable& t,
                                   int x_end, int out_w, std::uint8_t* dst) {
  const std::size_t out_stride = static_cast<std::size_t>(out_w) * 3;
  for (int y = 0; y < rows; y += 2) {
    const std::uint8_t* in0 = src + static_cast<std::size_t>(y) * stride;
    // An odd last row goes through both lanes and is stored twice, to the same place.
    const bool pair = y + 1 < rows;
    const std::uint8_t* in1 = pair ? in0 + stride : in0;
    std::uint8_t* out0 = dst + static_cast<std::size_t>(y) * out_stride;
    std::uint8_t* out1 = pair ? out0 + out_stride : out0;
    horizontal_block<K>(in0, in1, t, x_end, out0, out1);
  }
}

// Eight bytes -> eight int32 lanes.
DER_AVX2 inline __m256i widen8(const std::uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace

int horizontal_avx2(const std::uint8_t* src, std::size_t src_stride, int src_w, int rows, const AxisTable& t,
                    int out_w, std::uint8_t* dst) {
  const int k = t.fixed;
  if (k < 1) return 0;
  // Column x reads bytes 3 * first[x] .. + 15 * (loads - 1) + 16; first[] never decreases, so the columns
  // whose loads stay inside the row are a prefix. It is rounded down to whole groups of four.
  const long long row_bytes = 3LL * src_w;
  const long long span = 15LL * ((k + 4) / 5 - 1) + 16;
  int x_end = 0;
  while (x_end < out_w && 3LL * t.first[x_end] + span <= row_bytes) ++x_end;
  x_end &= ~3;
  if (x_end == 0) return 0;
  switch (k) {
#define DER_CASE(n) \
  case n: horizontal_rows_avx2<n>(src, src_stride, rows, t, x_end, out_w, dst); break;
    DER_CASE(1) DER_CASE(2) DER_CASE(3) DER_CASE(4) DER_CASE(5) DER_CASE(6) DER_CASE(7) DER_CASE(8)
    DER_CASE(9) DER_CASE(10) DER_CASE(11) DER_CASE(12) DER_CASE(13) DER_CASE(14) DER_CASE(15)
#undef DER_CASE
    default: horizontal_rows_avx2<0>(src, src_stride, rows, t, x_end, out_w, dst); break;
  }
  return x_end;
}

DER_AVX2 bool vertical_avx2(const std::uint8_t* src, std::size_t src_stride, int row0, int width, const AxisTable& t,
                            int out_h, std::uint8_t* dst) {
  const std::size_t n_bytes = static_cast<std::size_t>(width) * 3;
  if (n_bytes < 32) return false;
  const __m256i half = _mm256_set1_epi32(static_cast<int>(kHalf));
  // packus over the four 8-byte groups leaves dwords in the order 0, 2, 4, 6, 1, 3, 5, 7.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int y = 0; y < out_h; ++y) {
    const std::int32_t* k = &t.weights[static_cast<std::size_t>(y) * t.ksize];
    const int n = t.count[y];
    const std::uint8_t* base = src + static_cast<std::size_t>(t.first[y] - row0) * src_stride;
    std::uint8_t* out = dst + static_cast<std::size_t>(y) * n_bytes;
    // 32 bytes per step; the last step is moved back to end at n_bytes (it rewrites a few bytes, same values).
    for (std::size_t j0 = 0; j0 < n_bytes; j0 += 32) {
      const std::size_t j = j0 + 32 <= n_bytes ? j0 : n_bytes - 32;
      __m256i a0 = half, a1 = half, a2 = half, a3 = half;
      const std::uint8_t* p = base + j;
      for (int i = 0; i < n; ++i, p += src_stride) {
        const __m256i w = _mm256_set1_epi32(k[i]);
        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(widen8(p), w));
        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(widen8(p + 8), w));
        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(widen8(p + 16), w));
        a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(widen8(p + 24), w));
      }
      const int s = kPrecisionBits;
      const __m256i lo = _mm256_packs_epi32(_mm256_srai_epi32(a0, s), _mm256_srai_epi32(a1, s));
      const __m256i hi = _mm256_packs_epi32(_mm256_srai_epi32(a2, s), _mm256_srai_epi32(a3, s));
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), bytes);
    }
  }
  return true;
}

}  // namespace detail
}  // namespace der

#else  // not x86-64 GCC/Clang: the portable passes only

namespace der {
namespace detail {
int horizontal_avx2(const std::uint8_t*, std::size_t, int, int, const AxisTable&, int, std::uint8_t*) { return 0; }
bool vertical_avx2(const std::uint8_t*, std::size_t, int, int, const AxisTable&, int, std::uint8_t*) { return false; }
}  // namespace detail
}  // namespace der

#endif
