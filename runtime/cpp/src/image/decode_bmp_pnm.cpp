// BMP and binary PNM, parsed here: their layouts are simple, and the accept/refuse rules must be Pillow's. What a
// layout here does not cover is refused with an error naming the format, never approximated.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "decode_internal.hpp"

namespace der {
namespace detail {
namespace {

void put(Bitmap& b, int x, int y, std::uint8_t r, std::uint8_t g, std::uint8_t bl) {
  std::uint8_t* o = &b.pixels[(static_cast<std::size_t>(y) * b.width + x) * 3];
  o[0] = r;
  o[1] = g;
  o[2] = bl;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------ BMP
// The header rules of Pillow's BMP reader (header sizes, bit depths, bit-field layouts, palette size, where the
// pixels start); RLE compression is not decoded here.
void decode_bmp(Bytes in, const std::string& name, Decoded& d) {
  if (in.size < 18) fail_corrupt(name, "BMP header is truncated");
  const std::uint8_t* p = in.data;
  std::uint32_t offset = le32(p + 10);
  const std::uint32_t header = le32(p + 14);
  if (header < 4 || in.size - 14 < header) fail_corrupt(name, "Truncated File Read");
  const std::uint8_t* h = p + 18;  // header fields after the size
  long long w, ht;
  int bits, compression = 0, pal_entry = 4;
  long long colors = 0;
  bool top_down = false;
  std::uint32_t mask[4] = {0, 0, 0, 0};
  std::size_t pos = 14 + header;
  if (header == 12) {
    w = le16(h);
    ht = le16(h + 2);
    bits = static_cast<int>(le16(h + 6));
    pal_entry = 3;
  } else if (header == 40 || header == 52 || header == 56 || header == 64 || header == 108 || header == 124) {
    top_down = h[7] == 0xff;  // Pillow's test for a negative (top-down) height
    w = le32(h);
    ht = top_down ? (1LL << 32) - le32(h + 4) : le32(h + 4);
    bits = static_cast<int>(le16(h + 10));
    compression = static_cast<int>(le32(h + 12));
    colors = le32(h + 28);
    if (compression == 3) {
      if (header - 4 >= 48) {
        for (int i = 0; i < (header - 4 >= 52 ? 4 : 3); ++i) mask[i] = le32(h + 36 + 4 * i);
      } else {
        if (in.size - pos < 12) fail_corrupt(name, "BMP bit masks are truncated");
        for (int i = 0; i < 3; ++i) mask[i] = le32(p + pos + 4 * i);
        pos += 12;
      }
    }
  } else {
    fail_corrupt(name, "Unsupported BMP header type (" + std::to_string(header) + ")");
  }
  check_size(name, w, ht, d);
  if (colors == 0) colors = 1LL << std::min(bits, 62);
  if (offset == 14 + header && bits <= 8) offset += static_cast<std::uint32_t>(pal_entry * colors);
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
    fail_corrupt(name, "Unsupported BMP pixel depth (" + std::to_string(bits) + ")");
  // Byte positions of R, G, B in a pixel (for 16-bit: 565 or 555 decoding instead).
  int rgb_at[3] = {2, 1, 0};
  bool is565 = false;
  if (compression == 3) {
    auto is = [&](std::uint32_t r, std::uint32_t g, std::uint32_t b, std::uint32_t a) {
      return mask[0] == r && mask[1] == g && mask[2] == b && mask[3] == a;
    };
    auto byte_of = [](std::uint32_t m) { return m == 0xff ? 0 : m == 0xff00 ? 1 : m == 0xff0000 ? 2 : 3; };
    if (bits == 32 && (is(0xff0000, 0xff00, 0xff, 0) || is(0xff000000, 0xff0000, 0xff00, 0) ||
                       is(0xff000000, 0xff00, 0xff, 0) || is(0xff000000, 0xff0000, 0xff00, 0xff) ||
                       is(0xff, 0xff00, 0xff0000, 0xff000000) || is(0xff0000, 0xff00, 0xff, 0xff000000) ||
                       is(0xff000000, 0xff00, 0xff, 0xff0000))) {
      for (int c = 0; c < 3; ++c) rgb_at[c] = byte_of(mask[c]);
    } else if (bits == 32 && is(0, 0, 0, 0)) {
      // all-zero masks: read as BGRA
    } else if (bits == 24 && mask[0] == 0xff0000 && mask[1] == 0xff00 && mask[2] == 0xff) {
    } else if (bits == 16 && mask[0] == 0xf800 && mask[1] == 0x7e0 && mask[2] == 0x1f) {
      is565 = true;
    } else if (bits == 16 && mask[0] == 0x7c00 && mask[1] == 0x3e0 && mask[2] == 0x1f) {
    } else {
      fail_corrupt(name, "Unsupported BMP bitfields layout");
    }
  } else if (compression == 1 || compression == 2) {
    fail_unsupported(name, "BMP with RLE compression");
  } else if (compression != 0) {
    fail_corrupt(name, "Unsupported BMP compression (" + std::to_string(compression) + ")");
  }
  std::vector<std::uint8_t> palette;  // RGB triples, as many as the file holds
  if (bits <= 8) {
    if (!(colors > 0 && colors <= 65536)) fail_corrupt(name, "Unsupported BMP Palette size");
    for (long long i = 0; i < colors && pos + (i + 1) * pal_entry <= in.size; ++i) {
      const std::uint8_t* e = p + pos + i * pal_entry;
      palette.insert(palette.end(), {e[2], e[1], e[0]});
    }
    pos += static_cast<std::size_t>(pal_entry * colors);
  }
  const std::size_t start = offset ? offset : pos;
  const std::size_t stride = ((static_cast<std::size_t>(w) * bits + 31) >> 3) & ~std::size_t(3);
  const std::size_t row_bytes = (static_cast<std::size_t>(w) * bits + 7) / 8;
  if (w == 0 || ht == 0) fail_corrupt(name, "BMP size is zero");
  if (start > in.size || (in.size - start) < stride * (ht - 1) + row_bytes)
    fail_corrupt(name, "image file is truncated");
  reset_bitmap(d.bitmap, static_cast<int>(w), static_cast<int>(ht));
  for (long long y = 0; y < ht; ++y) {
    const std::uint8_t* r = p + start + stride * (top_down ? y : ht - 1 - y);
    for (long long x = 0; x < w; ++x) {
      const int xi = static_cast<int>(x), yi = static_cast<int>(y);
      if (bits == 24 || bits == 32) {
        const std::uint8_t* px = r + x * (bits / 8);
        put(d.bitmap, xi, yi, px[rgb_at[0]], px[rgb_at[1]], px[rgb_at[2]]);
      } else if (bits == 16) {
        const std::uint32_t v = le16(r + 2 * x);
        if (is565)
          put(d.bitmap, xi, yi, ((v >> 11) & 31) * 255 / 31, ((v >> 5) & 63) * 255 / 63, (v & 31) * 255 / 31);
        else
          put(d.bitmap, xi, yi, ((v >> 10) & 31) * 255 / 31, ((v >> 5) & 31) * 255 / 31, (v & 31) * 255 / 31);
      } else {
        const int per = 8 / bits;
        const std::size_t idx = (r[x / per] >> (8 - bits * (x % per + 1))) & ((1 << bits) - 1);
        if (3 * idx + 2 < palette.size())
          put(d.bitmap, xi, yi, palette[3 * idx], palette[3 * idx + 1], palette[3 * idx + 2]);
      }
    }
  }
  return;
}

// ------------------------------------------------------------------------------------------------------------ PNM
void decode_pnm(Bytes in, const std::string& name, Decoded& d) {
  const char kind = static_cast<char>(in.data[1]);
  if (kind != '4' && kind != '5' && kind != '6') fail_unsupported(name, std::string("PNM P") + kind + " (ASCII/PAM)");
  std::size_t pos = 2;
  long long fields[3] = {0, 0, 255};
  const int n_fields = kind == '4' ? 2 : 3;
  for (int f = 0; f < n_fields; ++f) {
    for (;;) {  // whitespace and comments
      if (pos >= in.size) fail_corrupt(name, "PNM header is truncated");
      if (in.data[pos] == '#') {
        while (pos < in.size && in.data[pos] != '\n' && in.data[pos] != '\r') ++pos;
      } else if (std::strchr(" \t\r\n\v\f", in.data[pos]) && in.data[pos]) {
        ++pos;
      } else {
        break;
      }
    }
    if (in.data[pos] < '0' || in.data[pos] > '9') fail_corrupt(name, "PNM header is not a number");
    long long v = 0;
    while (pos < in.size && in.data[pos] >= '0' && in.data[pos] <= '9' && v < (1LL << 40)) v = v * 10 + (in.data[pos++] - '0');
    fields[f] = v;
  }
  ++pos;  // the single whitespace byte before the raster
  const long long w = fields[0], h = fields[1];
  if (w <= 0 || h <= 0) fail_corrupt(name, "PNM size is invalid");
  const long long maxval = fields[2];
  // 8-bit, and 16-bit at full range (Pillow: gray as I;16 -> rint(v / 257), colour keeps the high byte).
  if (maxval != 255 && !(maxval == 65535 && kind != '4'))
    fail_unsupported(name, "PNM with maxval " + std::to_string(maxval));
  check_size(name, w, h, d);
  const int bytes = maxval == 65535 ? 2 : 1;
  const std::size_t row = kind == '4' ? (w + 7) / 8 : (kind == '5' ? w : 3 * w) * bytes;
  if (pos > in.size || in.size - pos < row * h) fail_corrupt(name, "image file is truncated");
  reset_bitmap(d.bitmap, static_cast<int>(w), static_cast<int>(h));
  for (long long y = 0; y < h; ++y) {
    const std::uint8_t* r = in.data + pos + row * y;
    for (long long x = 0; x < w; ++x) {
      if (kind == '6') {
        put(d.bitmap, x, y, r[3 * x * bytes], r[(3 * x + 1) * bytes], r[(3 * x + 2) * bytes]);
      } else if (kind == '5') {
        const std::uint8_t v =
            bytes == 1 ? r[x] : static_cast<std::uint8_t>(((r[2 * x] << 8 | r[2 * x + 1]) + 128) / 257);
        put(d.bitmap, x, y, v, v, v);
      }
      else {
        const std::uint8_t v = (r[x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;  // PBM: 1 is black
        put(d.bitmap, x, y, v, v, v);
      }
    }
  }
  return;
}

}  // namespace detail
}  // namespace der
