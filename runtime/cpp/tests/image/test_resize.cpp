// Invariants of the image layer that need no reference implementation (Pillow equality is tested from Python
// in tests/cpp/test_image_parity.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <random>
#include <thread>
#include <vector>

#include "der/error.hpp"
#include "der/image.hpp"

namespace {

const der::Interpolation kAll[] = {der::Interpolation::Nearest, der::Interpolation::Bilinear,
                                   der::Interpolation::Bicubic, der::Interpolation::Lanczos,
                                   der::Interpolation::Box,     der::Interpolation::Hamming};

der::Bitmap noise(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  der::Bitmap b;
  b.width = w;
  b.height = h;
  b.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  for (auto& v : b.pixels) v = static_cast<std::uint8_t>(rng() & 255);
  return b;
}

TEST(Resize, ConstantImageStaysConstant) {
  for (auto interp : kAll) {
    der::Bitmap src;
    src.width = 37;
    src.height = 23;
    src.pixels.resize(37 * 23 * 3);
    for (std::size_t i = 0; i < src.pixels.size(); i += 3) {
      src.pixels[i] = 200;
      src.pixels[i + 1] = 7;
      src.pixels[i + 2] = 128;
    }
    for (auto [w, h] : {std::pair{448, 448}, {5, 3}, {1, 1}, {100, 2}, {37, 50}}) {
      const der::Bitmap out = der::resize(src.view(), w, h, interp);
      ASSERT_EQ(out.width, w);
      ASSERT_EQ(out.height, h);
      for (std::size_t i = 0; i < out.pixels.size(); i += 3) {
        ASSERT_EQ(out.pixels[i], 200) << der::interpolation_name(interp) << " " << w << "x" << h;
        ASSERT_EQ(out.pixels[i + 1], 7);
        ASSERT_EQ(out.pixels[i + 2], 128);
      }
    }
  }
}

TEST(Resize, SameSizeIsACopy) {
  const der::Bitmap src = noise(31, 17, 1);
  for (auto interp : kAll) EXPECT_EQ(der::resize(src.view(), 31, 17, interp).pixels, src.pixels);
}

TEST(Resize, StrideIsHonoured) {
  const der::Bitmap src = noise(40, 30, 2);
  const std::size_t stride = 40 * 3 + 13;
  std::vector<std::uint8_t> padded(stride * 30, 0xAB);
  for (int y = 0; y < 30; ++y)
    std::copy_n(src.pixels.begin() + y * 120, 120, padded.begin() + y * stride);
  const der::Image view{padded.data(), 40, 30, stride};
  for (auto interp : kAll)
    EXPECT_EQ(der::resize(view, 17, 45, interp).pixels, der::resize(src.view(), 17, 45, interp).pixels)
        << der::interpolation_name(interp);
}

TEST(Resize, OnePixelSourceFillsTheTarget) {
  const der::Bitmap src = noise(1, 1, 3);
  for (auto interp : kAll) {
    const der::Bitmap out = der::resize(src.view(), 9, 4, interp);
    for (std::size_t i = 0; i < out.pixels.size(); ++i) ASSERT_EQ(out.pixels[i], src.pixels[i % 3]);
  }
}

TEST(Resize, RejectsBadSizes) {
  const der::Bitmap src = noise(4, 4, 4);
  EXPECT_THROW(der::resize(src.view(), 0, 4, der::Interpolation::Bilinear), der::Error);
  EXPECT_THROW(der::resize(der::Image{}, 4, 4, der::Interpolation::Bilinear), der::Error);
}

TEST(Interpolation, NamesRoundTripAndUnknownIsACardError) {
  for (auto interp : kAll) EXPECT_EQ(der::parse_interpolation(der::interpolation_name(interp)), interp);
  EXPECT_THROW(der::parse_interpolation("area"), der::CardError);
}

TEST(Normalize, MatchesFloat32Formula) {
  const der::Bitmap src = noise(5, 3, 5);
  const double mean[3] = {0.485, 0.456, 0.406}, sd[3] = {0.229, 0.224, 0.225};
  std::vector<float> rgb(3 * 15), bgr(3 * 15);
  der::normalize(src.view(), mean, sd, false, rgb.data());
  der::normalize(src.view(), mean, sd, true, bgr.data());
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 15; ++i) {
      const float scale = static_cast<float>(1.0 / (255.0 * sd[c]));
      const float bias = static_cast<float>(mean[c] / sd[c]);
      volatile float prod = static_cast<float>(src.pixels[3 * i + c]) * scale;
      const float want = prod - bias;
      EXPECT_EQ(rgb[c * 15 + i], want);
      EXPECT_EQ(bgr[(2 - c) * 15 + i], want);
    }
}

TEST(Preprocess, SameSizeSkipsTheResize) {
  const der::Bitmap src = noise(8, 6, 6);
  const double mean[3] = {0.5, 0.5, 0.5}, sd[3] = {0.25, 0.5, 1.0};
  std::vector<float> a(3 * 48), b(3 * 48);
  der::preprocess(src.view(), 6, 8, der::Interpolation::Lanczos, mean, sd, false, a.data());
  der::normalize(src.view(), mean, sd, false, b.data());
  EXPECT_EQ(a, b);
}

TEST(Decode, BadBytesAreImageErrorsNamingTheSource) {
  const std::uint8_t text[] = "not an image at all";
  try {
    der::decode_memory(text, sizeof text, "req0");
    FAIL() << "expected ImageError";
  } catch (const der::ImageError& e) {
    EXPECT_EQ(e.path(), "req0");
    EXPECT_EQ(std::string(e.what()).rfind("req0: ", 0), 0u);
  }
  EXPECT_THROW(der::decode_memory(text, 0, "empty"), der::ImageError);
  const std::uint8_t jpeg_head[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0};
  EXPECT_THROW(der::decode_memory(jpeg_head, sizeof jpeg_head, "cut.jpg"), der::ImageError);
  EXPECT_THROW(der::decode_file("/nonexistent/der/image.png"), der::ImageError);
  EXPECT_THROW(der::decode_file("/"), der::ImageError);
}

TEST(Resize, ThreadsGiveTheSameBytes) {
  const der::Bitmap src = noise(640, 480, 7);
  const der::Bitmap want = der::resize(src.view(), 448, 448, der::Interpolation::Bicubic);
  std::vector<int> same(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      bool ok = true;
      for (int i = 0; i < 5; ++i) ok = ok && der::resize(src.view(), 448, 448, der::Interpolation::Bicubic).pixels == want.pixels;
      same[t] = ok;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(same[t]);
}

}  // namespace

namespace {

std::string write_ppm(const der::Bitmap& b, const std::string& name) {
  const std::string path = ::testing::TempDir() + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fprintf(f, "P6\n%d %d\n255\n", b.width, b.height);
  std::fwrite(b.pixels.data(), 1, b.pixels.size(), f);
  std::fclose(f);
  return path;
}

// The per-thread scratch buffers must not leak one image into the next, nor one thread into another.
TEST(LoadAndPreprocess, EqualsDecodePlusPreprocessAcrossSizesAndThreads) {
  const std::vector<std::string> paths = {write_ppm(noise(640, 480, 11), "der_a.ppm"),
                                          write_ppm(noise(33, 17, 12), "der_b.ppm"),
                                          write_ppm(noise(480, 640, 13), "der_c.ppm")};
  const double mean[3] = {0.485, 0.456, 0.406}, sd[3] = {0.229, 0.224, 0.225};
  const int H = 64, W = 96;
  std::vector<std::vector<float>> want;
  for (const auto& p : paths) {
    std::vector<float> t(3 * H * W);
    der::preprocess(der::decode_file(p).view(), H, W, der::Interpolation::Bilinear, mean, sd, false, t.data());
    want.push_back(t);
  }
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      bool same = true;
      for (int i = 0; i < 9; ++i) {
        const std::size_t k = static_cast<std::size_t>(i + t) % paths.size();
        std::vector<float> got(3 * H * W);
        der::load_and_preprocess(paths[k], H, W, der::Interpolation::Bilinear, mean, sd, false, got.data());
        same = same && got == want[k];
      }
      ok[t] = same;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(ok[t]) << "thread " << t;
  EXPECT_THROW(der::load_and_preprocess(::testing::TempDir() + "der_missing.png", H, W,
                                        der::Interpolation::Bilinear, mean, sd, false, want[0].data()),
               der::ImageError);
}

}  // namespace
