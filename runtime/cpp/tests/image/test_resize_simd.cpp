// The AVX2 resize passes and normalize rows against the portable ones, bit for bit, in one process (Pillow
// equality of the default path is tested from Python in tests/cpp/test_image_parity.py; this covers the path a
// CPU without AVX2 takes, and the SIMD edge cases: columns near the right edge, odd row counts, many taps,
// strided sources).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "der/image.hpp"
#include "image/resize_internal.hpp"

namespace {

struct PortableOnly {
  PortableOnly() { der::detail::set_resize_simd(false); }
  ~PortableOnly() { der::detail::set_resize_simd(true); }
};

std::vector<std::uint8_t> pixels(int w, int h, std::size_t stride, std::mt19937& rng) {
  std::vector<std::uint8_t> v(stride * h);
  // Half the images are black/white only, which drives the sums to the clamp on both sides.
  const bool harsh = rng() & 1;
  for (auto& b : v) b = harsh ? ((rng() & 1) ? 255 : 0) : static_cast<std::uint8_t>(rng() & 255);
  return v;
}

TEST(ResizeSimd, EqualsPortablePath) {
  if (!der::detail::resize_simd_enabled()) GTEST_SKIP() << "no AVX2 on this CPU (or DER_IMAGE_SIMD=0)";
  const der::Interpolation kFilters[] = {der::Interpolation::Bilinear, der::Interpolation::Bicubic,
                                         der::Interpolation::Lanczos,  der::Interpolation::Box,
                                         der::Interpolation::Hamming};
  std::mt19937 rng(1234);
  // (w, h) -> (tw, th): the bench shape, shrinks with 1 to hundreds of taps per axis, enlargements, thin images, and
  // sizes just around the 4-column groups and 32-byte row steps of the AVX2 code.
  const int shapes[][4] = {{640, 480, 448, 448}, {640, 480, 224, 224}, {517, 333, 37, 91}, {100, 7, 33, 3},
                           {11, 10, 3, 4},       {12, 9, 5, 2},       {33, 40, 64, 64},   {13, 29, 200, 150},
                           {1, 50, 7, 9},        {50, 1, 9, 7},       {1000, 30, 61, 5},  {200, 200, 199, 201},
                           {15, 15, 14, 16},     {35, 35, 10, 11},    {41, 3, 12, 2},     {300, 64, 20, 64},
                           {4032, 24, 448, 8},   {700, 6, 9, 2}};
  int checked = 0;
  for (const auto& s : shapes)
    for (auto interp : kFilters)
      for (int padded = 0; padded < 2; ++padded) {
        const int w = s[0], h = s[1], tw = s[2], th = s[3];
        const std::size_t stride = static_cast<std::size_t>(w) * 3 + (padded ? 7 : 0);
        const std::vector<std::uint8_t> data = pixels(w, h, stride, rng);
        const der::Image src{data.data(), w, h, stride};
        const der::Bitmap fast = der::resize(src, tw, th, interp);
        der::Bitmap slow;
        {
          PortableOnly scope;
          slow = der::resize(src, tw, th, interp);
        }
        ASSERT_EQ(fast.pixels.size(), slow.pixels.size());
        std::size_t first_diff = 0;
        while (first_diff < fast.pixels.size() && fast.pixels[first_diff] == slow.pixels[first_diff]) ++first_diff;
        ASSERT_EQ(first_diff, fast.pixels.size())
            << w << "x" << h << " -> " << tw << "x" << th << " " << der::interpolation_name(interp) << " stride "
            << stride << ": first differing byte (of " << fast.pixels.size() << ")";
        ++checked;
      }
  EXPECT_EQ(checked, static_cast<int>(sizeof shapes / sizeof shapes[0]) * 5 * 2);
}

TEST(NormalizeSimd, EqualsFloat32FormulaBitForBit) {
  if (!der::detail::resize_simd_enabled()) GTEST_SKIP() << "no AVX2 on this CPU (or DER_IMAGE_SIMD=0)";
  // 67 x 13: every byte value in every channel, and a row length that leaves a tail after the 8-pixel steps.
  const int w = 67, h = 13;
  std::vector<std::uint8_t> data(static_cast<std::size_t>(w) * h * 3);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>((i * 7 + i / 3) & 255);
  const der::Image src{data.data(), w, h, 0};
  const double means[][3] = {{0.485, 0.456, 0.406}, {0.5, 0.5, 0.5}, {0.0, 0.1, 1.0 / 3}};
  const double stds[][3] = {{0.229, 0.224, 0.225}, {0.5, 0.5, 0.5}, {1.0 / 7, 3.0, 0.01}};
  const std::size_t plane = static_cast<std::size_t>(w) * h;
  for (int m = 0; m < 3; ++m)
    for (int bgr = 0; bgr < 2; ++bgr) {
      std::vector<float> fast(3 * plane), slow(3 * plane);
      der::normalize(src, means[m], stds[m], bgr, fast.data());
      {
        PortableOnly scope;
        der::normalize(src, means[m], stds[m], bgr, slow.data());
      }
      ASSERT_EQ(std::memcmp(fast.data(), slow.data(), fast.size() * sizeof(float)), 0) << "mean/std set " << m;
      for (int c = 0; c < 3; ++c) {
        const float scale = static_cast<float>(1.0 / (255.0 * stds[m][c]));
        const float bias = static_cast<float>(means[m][c] / stds[m][c]);
        const int plane_at = bgr ? 2 - c : c;
        for (std::size_t i = 0; i < plane; ++i) {
          volatile float prod = static_cast<float>(data[3 * i + c]) * scale;
          const float want = prod - bias;
          ASSERT_EQ(std::memcmp(&fast[plane_at * plane + i], &want, sizeof want), 0)
              << "channel " << c << " pixel " << i;
        }
      }
    }
}

}  // namespace
