// decode_file / decode_memory: read the bytes, pick the decoder by signature (as Pillow does), check the
// decompression-bomb limit, then apply the EXIF orientation like ImageOps.exif_transpose.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "decode_internal.hpp"

namespace der {
namespace detail {
namespace {

// Image.MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3); Pillow raises above twice that.
constexpr long long kMaxImagePixels = 1024LL * 1024 * 1024 / 4 / 3;

bool starts_with(Bytes in, const char* magic, std::size_t n) {
  return in.size >= n && std::memcmp(in.data, magic, n) == 0;
}

std::uint32_t read_u16(const std::uint8_t* p, bool big) {
  return big ? (p[0] << 8 | p[1]) : (p[1] << 8 | p[0]);
}

std::uint32_t read_u32(const std::uint8_t* p, bool big) {
  return big ? (std::uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3])
             : (std::uint32_t(p[3]) << 24 | p[2] << 16 | p[1] << 8 | p[0]);
}

// The seven non-identity orientations as Pillow's transposes (2 mirror, 3 rotate 180, 4 flip, 5 transpose,
// 6 rotate 270 i.e. clockwise, 7 transverse, 8 rotate 90 counter-clockwise).
void apply_orientation(const Bitmap& in, int orientation, Bitmap& out) {
  const int w = in.width, h = in.height;
  const bool swap = orientation >= 5;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        case 8: sx = w - 1 - y; sy = x; break;
        default: break;
      }
      std::memcpy(&out.pixels[(static_cast<std::size_t>(y) * out.width + x) * 3],
                  &in.pixels[(static_cast<std::size_t>(sy) * w + sx) * 3], 3);
    }
  }
}

// The file's bytes into `bytes` (storage reused), with load_image's checks and wording.
void read_file(const std::string& path, std::vector<std::uint8_t>& bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw ImageError(path, "file not found");
    throw ImageError(path, std::string("cannot read file (") + std::strerror(errno) + ")");
  }
  if (S_ISDIR(st.st_mode)) throw ImageError(path, "is a folder, not an image file");
  // Checked before opening: open() on a FIFO would block until a writer appears.
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)   ? "FIFO"
                       : S_ISSOCK(st.st_mode) ? "socket"
                       : S_ISCHR(st.st_mode)  ? "character device"
                       : S_ISBLK(st.st_mode)  ? "block device"
                                              : "special file";
    throw ImageError(path, std::string("not a regular file (a ") + kind + "); name an image file");
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw ImageError(path, std::string("cannot read file (") + std::strerror(errno) + ")");
  std::size_t have = 0;
  bytes.resize(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 0) + 1);  // +1: notices growth
  for (;;) {
    have += std::fread(bytes.data() + have, 1, bytes.size() - have, f.get());
    if (have < bytes.size()) break;
    bytes.resize(bytes.size() * 2);
  }
  if (std::ferror(f.get())) throw ImageError(path, std::string("cannot read file (") + std::strerror(errno) + ")");
  bytes.resize(have);
}

void decode_into(Bytes in, const std::string& name, const DecodeOptions& options, Decoded& d) {
  d.orientation = 1;
  d.options = options;
  if (in.size == 0) throw ImageError(name, "empty (0 bytes), not an image");
  if (starts_with(in, "\xff\xd8\xff", 3)) {
    decode_jpeg(in, name, d);
  } else if (starts_with(in, "\x89PNG\r\n\x1a\n", 8)) {
    decode_png(in, name, d);
  } else if (starts_with(in, "GIF87a", 6) || starts_with(in, "GIF89a", 6)) {
    decode_gif(in, name, d);
  } else if (starts_with(in, "BM", 2)) {
    decode_bmp(in, name, d);
  } else if (in.size >= 12 && std::memcmp(in.data, "RIFF", 4) == 0 && std::memcmp(in.data + 8, "WEBP", 4) == 0) {
    decode_webp(in, name, d);
  } else if (starts_with(in, "II*\0", 4) || starts_with(in, "MM\0*", 4) || starts_with(in, "II+\0", 4) ||
             starts_with(in, "MM\0+", 4)) {
    decode_tiff(in, name, d);
  } else if (in.size >= 2 && in.data[0] == 'P' && in.data[1] >= '1' && in.data[1] <= '7') {
    decode_pnm(in, name, d);
  } else if (starts_with(in, "\0\0\1\0", 4) || starts_with(in, "8BPS", 4) || starts_with(in, "qoif", 4) ||
             starts_with(in, "DDS ", 4) || starts_with(in, "\0\0\0\x0cjP  ", 8) ||
             (in.size >= 12 && std::memcmp(in.data + 4, "ftyp", 4) == 0)) {
    fail_unsupported(name, "of this file (ICO/PSD/QOI/DDS/JPEG 2000/AVIF/HEIF)");
  } else {
    throw ImageError(name, "not an image (format not recognised; the C++ SDK reads JPEG, PNG, BMP, GIF, "
                           "TIFF, WebP and binary PNM)");
  }
}

}  // namespace

void fail_corrupt(const std::string& name, const std::string& detail) {
  throw ImageError(name, "truncated or corrupt image data (" + detail + "); re-download or re-encode it");
}

void fail_unsupported(const std::string& name, const std::string& format) {
  throw ImageError(name, "format " + format + " is not supported by the C++ SDK; convert it to PNG/JPEG");
}

void check_bomb(const std::string& name, long long width, long long height) {
  // Sides come from untrusted headers (a PNM's up to 2^40): multiplied in 128 bits, as Python's ints never
  // overflow (fuzz_decode found the 64-bit product overflowing; tests/fuzz_regressions).
  using u128 = unsigned __int128;
  const u128 pixels = u128(width > 1 ? width : 1) * u128(height > 1 ? height : 1);
  if (pixels > u128(2 * kMaxImagePixels)) {
    std::string digits;
    for (u128 v = pixels; v; v /= 10) digits.insert(digits.begin(), static_cast<char>('0' + int(v % 10)));
    throw ImageError(name, "refused as a decompression bomb (Image size (" + digits +
                               " pixels) exceeds limit of " + std::to_string(2 * kMaxImagePixels) +
                               " pixels, could be decompression bomb DOS attack.)");
  }
}

void check_size(const std::string& name, long long width, long long height, const Decoded& d) {
  check_bomb(name, width, height);
  if (d.options.max_pixels > 0 && width * height > d.options.max_pixels)
    fail_too_large(name, width, height, d.options.max_pixels, 1);
}

void fail_too_large(const std::string& name, long long width, long long height, long long limit, int scale) {
  static const char kTimes[] = "\xc3\x97";  // U+00D7 in UTF-8, as Python writes it
  const auto size = [](long long w, long long h) { return std::to_string(w) + kTimes + std::to_string(h); };
  std::string what = size(width, height);
  if (scale > 1)
    what = size((width + scale - 1) / scale, (height + scale - 1) / scale) + " (1/" + std::to_string(scale) + " of " +
           what + ")";
  throw ImageError(name, "too large: " + what + " > " + std::to_string(limit) + " pixels; raise --max-pixels");
}

void reset_bitmap(Bitmap& b, long long w, long long h) {
  b.width = static_cast<int>(w);
  b.height = static_cast<int>(h);
  b.pixels.assign(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3, 0);
}

void gray_to_rgb(const std::uint8_t* in, std::uint8_t* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
}

int exif_orientation(Bytes exif) {
  const std::uint8_t* p = exif.data;
  std::size_t n = exif.size;
  for (int i = 0; i < 2 && n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0; ++i) p += 6, n -= 6;
  if (n == 0) return 0;
  // Pillow refuses a non-TIFF EXIF header (SyntaxError -> the Python runtime reports the file as corrupt).
  const bool big = n >= 4 && std::memcmp(p, "MM\0", 3) == 0 && (p[3] == 0x2a || p[3] == 0x2b);
  const bool little = n >= 4 && std::memcmp(p, "II", 2) == 0 && (p[2] == 0x2a || p[2] == 0x2b) && p[3] == 0;
  if (n < 8 || !(big || little)) return -1;
  if ((big && p[3] == 0x2b) || (little && p[2] == 0x2b)) return 0;  // BigTIFF-style EXIF: not honoured
  const std::uint32_t ifd = read_u32(p + 4, big);
  if (ifd > n || n - ifd < 2) return 0;
  const std::uint32_t count = read_u16(p + ifd, big);
  // Pillow's IFD reader: value sizes by type; a value over 4 bytes lives at an offset and is skipped (as if
  // absent) when the running total of such values exceeds the blob, and ends the directory when it lies past
  // the blob's end. The first stored orientation entry wins; only a single integer is acted on.
  static const int kUnit[14] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4};
  std::size_t total = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::size_t at = ifd + 2 + std::size_t(i) * 12;
    if (at + 12 > n) break;  // truncated directory: Pillow stops reading entries there
    const std::uint32_t tag = read_u16(p + at, big), type = read_u16(p + at + 2, big);
    const std::uint32_t cnt = read_u32(p + at + 4, big);
    if (type == 0 || type > 13) continue;  // unknown type: ignored
    const std::size_t size = std::size_t(cnt) * kUnit[type];
    const std::uint8_t* v = p + at + 8;
    if (size > 4) {
      total += size;
      const std::size_t off = read_u32(v, big);
      if (total > n) continue;                // "tag data larger than file": skipped
      if (off > n || n - off < size) break;   // a short read ends Pillow's directory load
      v = p + off;
    }
    if (tag != 0x0112 || size == 0) continue;
    if (cnt != 1) return 1;  // a tuple: present, but not an orientation Pillow acts on
    double value = 1;
    switch (type) {
      case 1: value = v[0]; break;
      case 3: value = read_u16(v, big); break;
      case 4: value = read_u32(v, big); break;
      case 6: value = static_cast<std::int8_t>(v[0]); break;
      case 8: value = static_cast<std::int16_t>(read_u16(v, big)); break;
      case 9: value = static_cast<std::int32_t>(read_u32(v, big)); break;
      // Rationals and floats too: exif_transpose looks the value up in a dict, where 6.0 and 12/2 match 6.
      case 5: case 10: {
        const std::uint32_t num = read_u32(v, big), den = read_u32(v + 4, big);
        if (den == 0) return 1;  // Pillow's IFDRational is NaN then: never an orientation
        value = type == 5 ? double(num) / double(den)
                          : double(static_cast<std::int32_t>(num)) / double(static_cast<std::int32_t>(den));
        break;
      }
      case 11: {
        const std::uint32_t bits = read_u32(v, big);
        float f;
        std::memcpy(&f, &bits, sizeof f);
        value = f;
        break;
      }
      case 12: {
        const std::uint64_t bits = std::uint64_t(read_u32(v, big)) << (big ? 32 : 0) |
                                   std::uint64_t(read_u32(v + 4, big)) << (big ? 0 : 32);
        std::memcpy(&value, &bits, sizeof value);
        break;
      }
      default: return 1;  // text, undefined, ...: present, not acted on
    }
    for (int k = 1; k <= 8; ++k)
      if (value == k) return k;
    return 1;
  }
  return 0;
}

int xmp_orientation(Bytes xmp) {
  static const char kKey[] = "tiff:Orientation";
  const std::size_t k = sizeof(kKey) - 1;
  for (std::size_t i = 0; i + k < xmp.size; ++i) {
    if (std::memcmp(xmp.data + i, kKey, k) != 0) continue;
    const std::uint8_t* q = xmp.data + i + k;
    const std::size_t left = xmp.size - i - k;
    if (left >= 3 && q[0] == '=' && q[1] == '"' && q[2] >= '0' && q[2] <= '9') return q[2] - '0';
    if (left >= 2 && q[0] == '>' && q[1] >= '0' && q[1] <= '9') return q[1] - '0';
  }
  return 0;
}

}  // namespace detail

Bitmap decode_memory(const std::uint8_t* data, std::size_t size, const std::string& name,
                     const DecodeOptions& options) {
  detail::Decoded d;
  detail::decode_into(detail::Bytes{data, size}, name, options, d);
  if (d.orientation < 2 || d.orientation > 8) return std::move(d.bitmap);
  Bitmap upright;
  detail::apply_orientation(d.bitmap, d.orientation, upright);
  return upright;
}

Bitmap decode_file(const std::string& path, const DecodeOptions& options) {
  std::vector<std::uint8_t> bytes;
  detail::read_file(path, bytes);
  return decode_memory(bytes.data(), bytes.size(), path, options);
}

void load_and_preprocess(const std::string& path, int height, int width, Interpolation interp, const double mean[3],
                         const double std[3], bool bgr, float* out, const DecodeOptions& options) {
  // Per-thread buffers, reused image after image: allocating a few MB per image costs page faults that
  // showed up as a third of the preprocessing time.
  struct Scratch {
    std::vector<std::uint8_t> file;
    detail::Decoded decoded;
    Bitmap upright, resized;
  };
  thread_local Scratch s;
  detail::read_file(path, s.file);
  detail::decode_into(detail::Bytes{s.file.data(), s.file.size()}, path, options, s.decoded);
  const Bitmap* img = &s.decoded.bitmap;
  if (s.decoded.orientation >= 2 && s.decoded.orientation <= 8) {
    detail::apply_orientation(s.decoded.bitmap, s.decoded.orientation, s.upright);
    img = &s.upright;
  }
  if (img->width == width && img->height == height) {
    normalize(img->view(), mean, std, bgr, out);
  } else {
    detail::resize_into(img->view(), width, height, interp, s.resized);
    normalize(s.resized.view(), mean, std, bgr, out);
  }
  // Do not keep a huge photo's worth of memory per thread for good.
  constexpr std::size_t kKeep = std::size_t(64) << 20;
  for (auto* v : {&s.file, &s.decoded.bitmap.pixels, &s.upright.pixels, &s.resized.pixels})
    if (v->capacity() > kKeep) std::vector<std::uint8_t>().swap(*v);
}

}  // namespace der
