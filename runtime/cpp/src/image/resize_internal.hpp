// Shared by resize.cpp (tables, scalar passes, dispatch) and resize_avx2.cpp (the AVX2 passes); not installed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace der {
namespace detail {

constexpr int kPrecisionBits = 32 - 8 - 2;  // 8 bits of result, 2 bits of headroom for negative lobes
constexpr std::uint32_t kHalf = 1u << (kPrecisionBits - 1);

// One axis: for output index i, taps first[i] .. first[i] + count[i] - 1 with integer weights
// weights[i * ksize + t].
struct AxisTable {
  int ksize = 0;
  int fixed = 0;  // when > 0, every entry has exactly this many taps (see build_table)
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;
};

// Whether the AVX2 passes (resize, and normalize's rows) run: the CPU has AVX2 and DER_IMAGE_SIMD is not "0"
// (read once). Both paths give the same bytes; the switch lets tests compare them and check the portable path.
bool resize_simd_enabled();
void set_resize_simd(bool on);  // tests only: force the portable path (false) or back to the default (true)

// AVX2 horizontal pass over `rows` rows (row r at src + r * src_stride, each src_w pixels) for output columns
// [0, x_end); returns x_end, the first column it left to the portable code (0 when it did nothing): the
// columns whose 16-byte loads would run past the end of a row. Needs t.fixed > 0.
int horizontal_avx2(const std::uint8_t* src, std::size_t src_stride, int src_w, int rows, const AxisTable& t,
                    int out_w, std::uint8_t* dst);

// AVX2 vertical pass: output row y = sum over t's taps of rows (t.first[y] - row0 + i) of `src`; `width` pixels.
// Returns false, having done nothing, when a row is shorter than one 32-byte step.
bool vertical_avx2(const std::uint8_t* src, std::size_t src_stride, int row0, int width, const AxisTable& t,
                   int out_h, std::uint8_t* dst);

}  // namespace detail
}  // namespace der
