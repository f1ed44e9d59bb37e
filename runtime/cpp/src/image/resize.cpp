// Pillow's (>= 13) Image.resize for RGB8, byte for byte: the same filter kernels evaluated in double, the same
// coefficient normalisation and 22-bit fixed-point rounding, two separable passes (order as Pillow 13 picks) with a clamp
// to 0..255 in between, and NEAREST through the scaling-affine path (accumulated double coordinates).
// Written from the algorithm's description; the loops are arranged for speed (coefficient tables per axis,
// vertical pass accumulating whole rows so the compiler can vectorise).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <atomic>
#include <cstdlib>

#include "der/error.hpp"
#include "der/image.hpp"
#include "decode_internal.hpp"
#include "resize_internal.hpp"

namespace der {

namespace detail {
namespace {
std::atomic<bool> g_simd_off{false};

bool cpu_simd() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!__builtin_cpu_supports("avx2")) return false;
  const char* env = std::getenv("DER_IMAGE_SIMD");
  return !(env && std::strcmp(env, "0") == 0);
#else
  return false;
#endif
}
}  // namespace

bool resize_simd_enabled() {
  static const bool available = cpu_simd();
  return available && !g_simd_off.load(std::memory_order_relaxed);
}

void set_resize_simd(bool on) { g_simd_off.store(!on, std::memory_order_relaxed); }
}  // namespace detail

namespace {

using detail::AxisTable;
using detail::kHalf;
using detail::kPrecisionBits;

constexpr double kPi = 3.14159265358979323846;

double box_kernel(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_kernel(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_kernel(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= kPi;
  // The window's constants are single-precision literals in the reference; keep their exact float values.
  return std::sin(x) / x * (static_cast<double>(0.54f) + static_cast<double>(0.46f) * std::cos(x));
}

double bicubic_kernel(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= kPi;
  return std::sin(x) / x;
}

double lanczos_kernel(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

struct Kernel {
  double (*fn)(double);
  double support;
};

Kernel kernel_for(Interpolation interp) {
  switch (interp) {
    case Interpolation::Box: return {box_kernel, 0.5};
    case Interpolation::Bilinear: return {bilinear_kernel, 1.0};
    case Interpolation::Hamming: return {hamming_kernel, 1.0};
    case Interpolation::Bicubic: return {bicubic_kernel, 2.0};
    case Interpolation::Lanczos: return {lanczos_kernel, 3.0};
    case Interpolation::Nearest: break;
  }
  return {nullptr, 0.0};
}

AxisTable build_table(int in_size, int out_size, const Kernel& kernel) {
  // The reference takes the source box as floats; (0, in_size) is exact in float for any realistic size.
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kernel.support * filterscale;
  AxisTable t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<std::size_t>(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < out_size; ++i) {
    const double center = in0 + (i + 0.5) * scale;
    int lo = static_cast<int>(center - support + 0.5);  // truncation toward zero, as a C cast
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double total = 0.0;
    for (int x = 0; x < n; ++x) {
      w[x] = kernel.fn((x + lo - center + 0.5) * ss);
      total += w[x];
    }
    std::int32_t* out = &t.weights[static_cast<std::size_t>(i) * t.ksize];
    for (int x = 0; x < n; ++x) {
      const double k = total != 0.0 ? w[x] / total : w[x];
      const double scaled = k * (1 << kPrecisionBits);
      out[x] = static_cast<std::int32_t>(k < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    t.first[i] = lo;
    t.count[i] = n;
  }
  // For speed every entry gets the same number of taps (the largest count) when the source is long enough: the
  // window is moved left where it would run past the end and the extra taps get weight 0, adding nothing.
  const int kmax = *std::max_element(t.count.begin(), t.count.end());
  if (in_size >= kmax) {
    for (int i = 0; i < out_size; ++i) {
      std::int32_t* k = &t.weights[static_cast<std::size_t>(i) * t.ksize];
      const int shift = std::max(0, t.first[i] + kmax - in_size);
      if (shift) {
        for (int x = kmax - 1; x >= 0; --x) k[x] = x >= shift ? k[x - shift] : 0;
        t.first[i] -= shift;
      }
      t.count[i] = kmax;
    }
    t.fixed = kmax;
  }
  return t;
}

// Sums are accumulated modulo 2^32 (unsigned, so no undefined behaviour) and read back as int32, which is
// what a plain int accumulator gives; the clamp replaces the reference's lookup table over [-640, 639].
inline std::uint8_t clamp_fixed(std::uint32_t acc) {
  const std::int32_t v = static_cast<std::int32_t>(acc) >> kPrecisionBits;
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Output columns [x0, out_w) of `rows` rows (x0 > 0 when the AVX2 pass did the others).
template <int K>
void horizontal_rows(const Image& src, int row0, int rows, const AxisTable& t, int x0, int out_w, std::uint8_t* dst) {
  const std::size_t in_stride = src.row_bytes();
  const std::size_t out_stride = static_cast<std::size_t>(out_w) * 3;
  int y = 0;
  // Two rows per sweep share the tap positions and weights (fewer loads per multiply-add).
  for (; y + 1 < rows; y += 2) {
    const std::uint8_t* in0 = src.data + static_cast<std::size_t>(row0 + y) * in_stride;
    const std::uint8_t* in1 = in0 + in_stride;
    std::uint8_t* __restrict out0 = dst + static_cast<std::size_t>(y) * out_stride;
    std::uint8_t* __restrict out1 = out0 + out_stride;
    const std::int32_t* k = t.weights.data() + static_cast<std::size_t>(x0) * t.ksize;
    for (int x = x0; x < out_w; ++x, k += t.ksize) {
      const std::size_t at = static_cast<std::size_t>(t.first[x]) * 3;
      const std::uint8_t* p = in0 + at;
      const std::uint8_t* q = in1 + at;
      const int n = K > 0 ? K : t.count[x];
      std::uint32_t r0 = kHalf, g0 = kHalf, b0 = kHalf, r1 = kHalf, g1 = kHalf, b1 = kHalf;
      for (int i = 0; i < n; ++i, p += 3, q += 3) {
        const std::uint32_t w = static_cast<std::uint32_t>(k[i]);
        r0 += p[0] * w;
        g0 += p[1] * w;
        b0 += p[2] * w;
        r1 += q[0] * w;
        g1 += q[1] * w;
        b1 += q[2] * w;
      }
      out0[3 * x + 0] = clamp_fixed(r0);
      out0[3 * x + 1] = clamp_fixed(g0);
      out0[3 * x + 2] = clamp_fixed(b0);
      out1[3 * x + 0] = clamp_fixed(r1);
      out1[3 * x + 1] = clamp_fixed(g1);
      out1[3 * x + 2] = clamp_fixed(b1);
    }
  }
  for (; y < rows; ++y) {
    const std::uint8_t* in = src.data + static_cast<std::size_t>(row0 + y) * in_stride;
    std::uint8_t* __restrict out = dst + static_cast<std::size_t>(y) * out_stride;
    const std::int32_t* k = t.weights.data() + static_cast<std::size_t>(x0) * t.ksize;
    for (int x = x0; x < out_w; ++x, k += t.ksize) {
      const std::uint8_t* p = in + static_cast<std::size_t>(t.first[x]) * 3;
      const int n = K > 0 ? K : t.count[x];
      std::uint32_t r = kHalf, g = kHalf, b = kHalf;
      for (int i = 0; i < n; ++i, p += 3) {
        const std::uint32_t w = static_cast<std::uint32_t>(k[i]);
        r += p[0] * w;
        g += p[1] * w;
        b += p[2] * w;
      }
      out[3 * x + 0] = clamp_fixed(r);
      out[3 * x + 1] = clamp_fixed(g);
      out[3 * x + 2] = clamp_fixed(b);
    }
  }
}

void horizontal_pass(const Image& src, int row0, int rows, const AxisTable& t, int out_w, std::uint8_t* dst) {
  int x0 = 0;
  if (detail::resize_simd_enabled())
    x0 = detail::horizontal_avx2(src.data + static_cast<std::size_t>(row0) * src.row_bytes(), src.row_bytes(),
                                 src.width, rows, t, out_w, dst);
  if (x0 == out_w) return;
  // A fixed tap count lets the compiler unroll the inner loop.
  switch (t.fixed) {
    case 1: return horizontal_rows<1>(src, row0, rows, t, x0, out_w, dst);
    case 2: return horizontal_rows<2>(src, row0, rows, t, x0, out_w, dst);
    case 3: return horizontal_rows<3>(src, row0, rows, t, x0, out_w, dst);
    case 4: return horizontal_rows<4>(src, row0, rows, t, x0, out_w, dst);
    case 5: return horizontal_rows<5>(src, row0, rows, t, x0, out_w, dst);
    case 6: return horizontal_rows<6>(src, row0, rows, t, x0, out_w, dst);
    case 7: return horizontal_rows<7>(src, row0, rows, t, x0, out_w, dst);
    case 8: return horizontal_rows<8>(src, row0, rows, t, x0, out_w, dst);
    default: break;
  }
  horizontal_rows<0>(src, row0, rows, t, x0, out_w, dst);
}

// rows of `src_data` start at row 0 = source row `row0`; `t.first` is in source coordinates.
void vertical_pass(const std::uint8_t* src_data, std::size_t src_stride, int row0, int width, const AxisTable& t,
                   int out_h, std::uint8_t* dst) {
  if (detail::resize_simd_enabled() && detail::vertical_avx2(src_data, src_stride, row0, width, t, out_h, dst)) return;
  const std::size_t n_bytes = static_cast<std::size_t>(width) * 3;
  std::vector<std::uint32_t> acc_buf(n_bytes);
  std::uint32_t* __restrict acc = acc_buf.data();
  for (int y = 0; y < out_h; ++y) {
    const std::int32_t* k = &t.weights[static_cast<std::size_t>(y) * t.ksize];
    const int n = t.count[y];
    const std::uint8_t* base = src_data + static_cast<std::size_t>(t.first[y] - row0) * src_stride;
    for (std::size_t j = 0; j < n_bytes; ++j) acc[j] = kHalf;
    // Two source rows per sweep halves the accumulator traffic; the loops are plain enough to vectorise.
    int i = 0;
    for (; i + 1 < n; i += 2) {
      const std::uint8_t* __restrict a = base + static_cast<std::size_t>(i) * src_stride;
      const std::uint8_t* __restrict b = a + src_stride;
      const std::uint32_t wa = static_cast<std::uint32_t>(k[i]), wb = static_cast<std::uint32_t>(k[i + 1]);
      for (std::size_t j = 0; j < n_bytes; ++j) acc[j] += a[j] * wa + b[j] * wb;
    }
    if (i < n) {
      const std::uint8_t* __restrict a = base + static_cast<std::size_t>(i) * src_stride;
      const std::uint32_t wa = static_cast<std::uint32_t>(k[i]);
      for (std::size_t j = 0; j < n_bytes; ++j) acc[j] += a[j] * wa;
    }
    std::uint8_t* __restrict out = dst + static_cast<std::size_t>(y) * n_bytes;
    for (std::size_t j = 0; j < n_bytes; ++j) out[j] = clamp_fixed(acc[j]);
  }
}

// NEAREST: source coordinate = COORD(offset + (i + 0.5) * step) where the position is advanced by repeated
// addition in double (not multiplied), exactly as the reference's scaling-affine loop.
std::vector<int> nearest_table(int in_size, int out_size) {
  const double step = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  std::vector<int> idx(out_size, -1);
  double pos = 0.0 + step * 0.5;
  for (int i = 0; i < out_size; ++i) {
    const int v = pos < 0.0 ? -1 : static_cast<int>(pos);
    if (v >= 0 && v < in_size) idx[i] = v;
    pos += step;
  }
  return idx;
}

void resize_nearest(const Image& src, int width, int height, Bitmap& out) {
  out.width = width;
  out.height = height;
  out.pixels.assign(static_cast<std::size_t>(width) * height * 3, 0);  // unmapped pixels stay black
  const std::vector<int> xs = nearest_table(src.width, width);
  const std::vector<int> ys = nearest_table(src.height, height);
  for (int y = 0; y < height; ++y) {
    if (ys[y] < 0) continue;
    const std::uint8_t* in = src.data + static_cast<std::size_t>(ys[y]) * src.row_bytes();
    std::uint8_t* o = out.pixels.data() + static_cast<std::size_t>(y) * width * 3;
    for (int x = 0; x < width; ++x) {
      if (xs[x] < 0) continue;
      std::memcpy(o + 3 * x, in + 3 * static_cast<std::size_t>(xs[x]), 3);
    }
  }
}

void copy_into(const Image& src, Bitmap& out) {
  out.width = src.width;
  out.height = src.height;
  const std::size_t row = static_cast<std::size_t>(src.width) * 3;
  out.pixels.resize(row * src.height);
  for (int y = 0; y < src.height; ++y)
    std::memcpy(out.pixels.data() + y * row, src.data + y * src.row_bytes(), row);
}

}  // namespace

Interpolation parse_interpolation(const std::string& name) {
  static const char* const kNames[] = {"nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"};
  for (int i = 0; i < 6; ++i)
    if (name == kNames[i]) return static_cast<Interpolation>(i);
  throw CardError("model card interpolation '" + name +
                  "' is unknown; use one of nearest, bilinear, bicubic, lanczos, box, hamming");
}

const char* interpolation_name(Interpolation interp) {
  switch (interp) {
    case Interpolation::Nearest: return "nearest";
    case Interpolation::Bilinear: return "bilinear";
    case Interpolation::Bicubic: return "bicubic";
    case Interpolation::Lanczos: return "lanczos";
    case Interpolation::Box: return "box";
    case Interpolation::Hamming: return "hamming";
  }
  return "unknown";
}

namespace detail {

void resize_into(const Image& src, int width, int height, Interpolation interp, Bitmap& out) {
  if (!src.data || src.width <= 0 || src.height <= 0)
    throw Error("resize: the source image is empty; pass an RGB8 image with width and height >= 1");
  if (width <= 0 || height <= 0)
    throw Error("resize: target size " + std::to_string(width) + "x" + std::to_string(height) +
                " is invalid; width and height must be >= 1");
  if (src.stride != 0 && src.stride < static_cast<std::size_t>(src.width) * 3)
    throw Error("resize: stride " + std::to_string(src.stride) + " is smaller than 3 * width");
  if (width == src.width && height == src.height) return copy_into(src, out);
  if (interp == Interpolation::Nearest) return resize_nearest(src, width, height, out);

  const Kernel kernel = kernel_for(interp);
  const bool need_h = width != src.width;
  const bool need_v = height != src.height;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<std::size_t>(width) * height * 3);
  if (!need_v) {
    horizontal_pass(src, 0, height, build_table(src.width, width, kernel), width, out.pixels.data());
    return;
  }
  const AxisTable tv = build_table(src.height, height, kernel);
  if (!need_h) {
    vertical_pass(src.data, src.row_bytes(), 0, width, tv, height, out.pixels.data());
    return;
  }
  const AxisTable th = build_table(src.width, width, kernel);
  // The intermediate image lives in a per-thread buffer reused from call to call (no page faults per image).
  thread_local std::vector<std::uint8_t> temp;
  // The pass order changes the result (the clamp to 8 bits sits between the passes). Pillow >= 13 runs the
  // vertical pass first when the height shrinks by more than twice as many pixels as the width does.
  const int dy = src.height - height, dx = src.width - width;
  if (dy > 0 && dy > dx * 2) {
    temp.resize(static_cast<std::size_t>(src.width) * height * 3);
    vertical_pass(src.data, src.row_bytes(), 0, src.width, tv, height, temp.data());
    const Image mid{temp.data(), src.width, height, static_cast<std::size_t>(src.width) * 3};
    horizontal_pass(mid, 0, height, th, width, out.pixels.data());
  } else {
    // Horizontal first, only over the source rows some output row reads.
    const int row_first = tv.first[0];
    const int row_last = tv.first[height - 1] + tv.count[height - 1];
    temp.resize(static_cast<std::size_t>(width) * (row_last - row_first) * 3);
    horizontal_pass(src, row_first, row_last - row_first, th, width, temp.data());
    vertical_pass(temp.data(), static_cast<std::size_t>(width) * 3, row_first, width, tv, height,
                  out.pixels.data());
  }
  if (temp.capacity() > (std::size_t(64) << 20)) std::vector<std::uint8_t>().swap(temp);
}

}  // namespace detail

Bitmap resize(const Image& src, int width, int height, Interpolation interp) {
  Bitmap out;
  detail::resize_into(src, width, height, interp, out);
  return out;
}

}  // namespace der
