// BMP, PNM and GIF (parsed here: simple layouts, and GIF must follow Pillow's reader), WebP (libwebp's animation
// decoder with default options, which is what Pillow uses), TIFF (libtiff, strip-based 1/8/16-bit gray, RGB,
// palette, CMYK). What a layout here does not cover is refused with an error naming the format, never approximated.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "decode_internal.hpp"

#ifdef DER_HAVE_WEBP
#include <webp/decode.h>
#include <webp/demux.h>
#endif
#ifdef DER_HAVE_TIFF
#include <tiffio.h>
#endif

namespace der {
namespace detail {
namespace {

std::uint32_t le16(const std::uint8_t* p) { return p[0] | p[1] << 8; }
std::uint32_t le32(const std::uint8_t* p) { return le16(p) | le16(p + 2) << 16; }

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
  check_bomb(name, w, ht);
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
  check_bomb(name, w, h);
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

// ------------------------------------------------------------------------------------------------------------ GIF
// Parsed and LZW-decoded here rather than with giflib, because the status must follow Pillow's reader: it is
// stricter than giflib about codes (a code past the next free table slot is an error), reads sub-blocks as one
// continuous stream, needs the frame's last pixel before the data ends, and skips unknown bytes between blocks.
namespace {

struct GifStream {
  Bytes in;
  std::size_t pos = 0;
  bool eof() const { return pos >= in.size; }
  int byte() { return pos < in.size ? in.data[pos++] : -1; }
  // One data sub-block (Pillow's GifImageFile.data): empty at a terminator or the end of the file.
  Bytes sub_block() {
    const int n = byte();
    if (n <= 0) return Bytes{nullptr, 0};
    const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(n), in.size - pos);
    Bytes b{in.data + pos, k};
    pos += k;
    return b;
  }
};

constexpr int kGifTable = 4096;

// LZW-decode the first frame's indices into `canvas` (w x h indices) at (x0, y0); false if the data runs out
// or is broken in a way Pillow's decoder rejects.
bool gif_lzw(GifStream& st, int min_bits, bool interlace, int x0, int y0, int fw, int fh, int cw,
             std::vector<std::uint8_t>& canvas, std::string& why) {
  if (min_bits > 12) {
    why = "bad LZW code size";
    return false;
  }
  const int clear = 1 << min_bits, end = clear + 1;
  std::vector<std::uint8_t> first(kGifTable), stack(kGifTable);
  std::vector<int> prefix(kGifTable);
  int next = 0, size = 0, mask = 0, last = 0;
  std::uint8_t last_first = 0;
  bool fresh = true;  // right after a clear code
  std::uint32_t bits = 0;
  int n_bits = 0, block_left = 0;
  int x = 0, y = 0, step = interlace ? 8 : 1, pass = interlace ? 1 : 0;
  auto reset = [&] {
    next = clear + 2;
    size = min_bits + 1;
    mask = (1 << size) - 1;
    fresh = true;
  };
  // Writes one pixel; returns true when the frame is complete.
  auto emit = [&](std::uint8_t v) {
    canvas[static_cast<std::size_t>(y0 + y) * cw + x0 + x] = v;
    if (++x < fw) return false;
    x = 0;
    y += step;
    while (y >= fh) {
      if (pass == 1) y = 4, pass = 2;
      else if (pass == 2) step = 4, y = 2, pass = 3;
      else if (pass == 3) step = 2, y = 1, pass = 4;
      else return true;
    }
    return false;
  };
  reset();
  for (;;) {
    while (n_bits < size) {
      if (block_left == 0) {
        const int n = st.byte();
        if (n < 0 || st.in.size - st.pos < static_cast<std::size_t>(n)) {
          why = "image file is truncated";
          return false;
        }
        block_left = n;  // a zero-length block does not end the stream for Pillow's decoder
        continue;
      }
      bits |= static_cast<std::uint32_t>(st.byte()) << n_bits;
      n_bits += 8;
      --block_left;
    }
    int c = static_cast<int>(bits & static_cast<std::uint32_t>(mask));
    bits >>= size;
    n_bits -= size;
    if (c == clear) {
      if (!fresh) reset();
      continue;
    }
    if (c == end) {  // an end code before the frame is full leaves it unfinished: truncated for Pillow
      why = "image file is truncated";
      return false;
    }
    int depth = 0;
    if (fresh) {
      if (c > clear) {
        why = "broken data stream";
        return false;
      }
      last = c;
      last_first = static_cast<std::uint8_t>(c);
      fresh = false;
    } else {
      const int code = c;
      if (c > next) {
        why = "broken data stream";
        return false;
      }
      if (c == next) {
        stack[depth++] = last_first;
        c = last;
      }
      while (c >= clear) {
        if (depth >= kGifTable || c >= kGifTable) {
          why = "broken data stream";
          return false;
        }
        stack[depth++] = first[c];
        c = prefix[c];
      }
      last_first = static_cast<std::uint8_t>(c);
      if (next < kGifTable) {
        first[next] = static_cast<std::uint8_t>(c);
        prefix[next] = last;
        if (next == mask && size < 12) mask = (1 << ++size) - 1;
        ++next;
      }
      last = code;
    }
    if (emit(last_first)) return true;
    while (depth > 0)
      if (emit(stack[--depth])) return true;
  }
}

}  // namespace

void decode_gif(Bytes in, const std::string& name, Decoded& d) {
  if (in.size < 13) fail_corrupt(name, "GIF header is truncated");
  GifStream st{in, 13};
  long long cw = le16(in.data + 6), ch = le16(in.data + 8);
  const int flags = in.data[10];
  std::vector<std::uint8_t> global;
  if (flags & 128) {
    const std::size_t n = std::size_t(3) << ((flags & 7) + 1);
    if (in.size - st.pos < n) fail_corrupt(name, "GIF palette is truncated");
    global.assign(in.data + st.pos, in.data + st.pos + n);
    st.pos += n;
  }
  check_bomb(name, cw, ch);
  int transparent = -1;
  for (;;) {  // blocks up to the first image descriptor, as Pillow's _seek(0) walks them
    const int tag = st.byte();
    if (tag < 0 || tag == ';') fail_corrupt(name, "image not found in GIF frame");
    if (tag == '!') {
      const int label = st.byte();
      if (label < 0) fail_corrupt(name, "GIF extension is truncated");
      Bytes block = st.sub_block();
      if (label == 0xf9 && block.data) {
        if (block.size < 3 || ((block.data[0] & 1) && block.size < 4)) fail_corrupt(name, "GIF control block is short");
        if (block.data[0] & 1) transparent = block.data[3];
      }
      if (label == 0xfe) {  // comment: Pillow reads its blocks up to the terminator and goes on
        while (block.data) block = st.sub_block();
        continue;
      }
      if (label == 0xff && block.data) st.sub_block();
      while (st.sub_block().data) {
      }
      continue;
    }
    if (tag != ',') continue;  // Pillow skips any other byte
    if (in.size - st.pos < 9) fail_corrupt(name, "GIF image descriptor is truncated");
    const std::uint8_t* dsc = in.data + st.pos;
    st.pos += 9;
    const int x0 = le16(dsc), y0 = le16(dsc + 2), fw = le16(dsc + 4), fh = le16(dsc + 6);
    std::vector<std::uint8_t> local;
    if (dsc[8] & 128) {
      const std::size_t n = std::size_t(3) << ((dsc[8] & 7) + 1);
      const std::size_t k = std::min(n, in.size - st.pos);
      local.assign(in.data + st.pos, in.data + st.pos + k);
      st.pos += k;
      if (k % 3) fail_corrupt(name, "GIF palette is truncated");
    }
    const int min_bits = st.byte();
    if (min_bits < 0) fail_corrupt(name, "GIF image data is missing");
    // A first frame reaching past the logical screen grows the canvas, as in Pillow.
    cw = std::max<long long>(cw, x0 + fw);
    ch = std::max<long long>(ch, y0 + fh);
    check_bomb(name, cw, ch);
    if (fw == 0 || fh == 0) fail_corrupt(name, "tile cannot extend outside image");
    const std::vector<std::uint8_t>& pal = (dsc[8] & 128) ? local : global;
    const bool has_pal = (dsc[8] & 128) || (flags & 128);
    std::vector<std::uint8_t> indices(static_cast<std::size_t>(cw) * ch,
                                      static_cast<std::uint8_t>(transparent >= 0 ? transparent : 0));
    std::string why;
    if (!gif_lzw(st, min_bits, (dsc[8] & 64) != 0, x0, y0, fw, fh, static_cast<int>(cw), indices, why))
      fail_corrupt(name, why);
    reset_bitmap(d.bitmap, static_cast<int>(cw), static_cast<int>(ch));
    for (std::size_t i = 0; i < indices.size(); ++i) {
      const std::size_t v = indices[i];
      std::uint8_t* o = &d.bitmap.pixels[3 * i];
      if (!has_pal) {
        o[0] = o[1] = o[2] = static_cast<std::uint8_t>(v);  // no palette: Pillow reads indices as gray levels
      } else if (3 * v + 2 < pal.size()) {
        o[0] = pal[3 * v];
        o[1] = pal[3 * v + 1];
        o[2] = pal[3 * v + 2];
      }  // an index past the palette stays black
    }
    return;
  }
}

// ----------------------------------------------------------------------------------------------------------- WebP
#ifdef DER_HAVE_WEBP
void decode_webp(Bytes in, const std::string& name, Decoded& d) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(in.data, in.size, &features) != VP8_STATUS_OK) fail_corrupt(name, "could not create decoder object");
  WebPData data{in.data, in.size};
  WebPAnimDecoder* dec = WebPAnimDecoderNew(&data, nullptr);  // default options: RGBA, as Pillow
  if (!dec) fail_corrupt(name, "could not create decoder object");
  struct Closer {
    WebPAnimDecoder* d;
    ~Closer() { WebPAnimDecoderDelete(d); }
  } closer{dec};
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(dec, &info)) fail_corrupt(name, "could not read WebP info");
  check_bomb(name, info.canvas_width, info.canvas_height);
  std::uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(dec, &rgba, &timestamp) || !rgba) fail_corrupt(name, "failed to decode next frame");
  reset_bitmap(d.bitmap, static_cast<int>(info.canvas_width), static_cast<int>(info.canvas_height));
  const std::size_t n = static_cast<std::size_t>(info.canvas_width) * info.canvas_height;
  for (std::size_t i = 0; i < n; ++i) std::memcpy(&d.bitmap.pixels[3 * i], rgba + 4 * i, 3);
  // EXIF / XMP chunks, as Pillow's WebP plugin collects them.
  const WebPDemuxer* demux = WebPAnimDecoderGetDemuxer(dec);
  WebPChunkIterator it;
  int orientation = 0;
  if (WebPDemuxGetChunk(demux, "EXIF", 1, &it)) {
    orientation = exif_orientation(Bytes{it.chunk.bytes, it.chunk.size});
    WebPDemuxReleaseChunkIterator(&it);
  }
  if (orientation < 0) fail_corrupt(name, "EXIF block is not a valid TIFF structure");
  if (orientation == 0 && WebPDemuxGetChunk(demux, "XMP ", 1, &it)) {
    orientation = xmp_orientation(Bytes{it.chunk.bytes, it.chunk.size});
    WebPDemuxReleaseChunkIterator(&it);
  }
  d.orientation = orientation;
  return;
}
#else
void decode_webp(Bytes, const std::string& name, Decoded&) { fail_unsupported(name, "WebP (built without libwebp)"); }
#endif

// ----------------------------------------------------------------------------------------------------------- TIFF
#ifdef DER_HAVE_TIFF
namespace {
struct TiffMemory {
  Bytes in;
  toff_t pos = 0;
};
tsize_t tiff_read(thandle_t h, tdata_t buf, tsize_t n) {
  auto* m = static_cast<TiffMemory*>(h);
  if (m->pos >= m->in.size) return 0;
  const tsize_t k = std::min<tsize_t>(n, static_cast<tsize_t>(m->in.size - m->pos));
  std::memcpy(buf, m->in.data + m->pos, k);
  m->pos += k;
  return k;
}
tsize_t tiff_write(thandle_t, tdata_t, tsize_t) { return -1; }
toff_t tiff_seek(thandle_t h, toff_t off, int whence) {
  auto* m = static_cast<TiffMemory*>(h);
  const toff_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->in.size;
  m->pos = base + off;
  return m->pos;
}
int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t h) { return static_cast<TiffMemory*>(h)->in.size; }
int tiff_map(thandle_t, tdata_t*, toff_t*) { return 0; }
void tiff_unmap(thandle_t, tdata_t, toff_t) {}

// libtiff reports through handlers; the per-call ones (TIFFOpenOptions) keep this free of global state.
int tiff_error(TIFF*, void* user, const char*, const char* fmt, va_list ap) {
  auto* msg = static_cast<std::string*>(user);
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  if (msg->empty()) *msg = buf;
  return 1;
}
int tiff_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }
}  // namespace

void decode_tiff(Bytes in, const std::string& name, Decoded& d) {
  TiffMemory mem{in};
  std::string error;
  TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
  TIFFOpenOptionsSetErrorHandlerExtR(opts, tiff_error, &error);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, tiff_warning, nullptr);
  TIFF* tif = TIFFClientOpenExt("memory", "rm", &mem, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size,
                                tiff_map, tiff_unmap, opts);
  TIFFOpenOptionsFree(opts);
  if (!tif) fail_corrupt(name, error.empty() ? "cannot read TIFF header" : error);
  struct Closer {
    TIFF* t;
    ~Closer() { TIFFClose(t); }
  } closer{tif};
  std::uint32_t w = 0, h = 0;
  std::uint16_t bits = 1, spp = 1, photometric = 0, planar = PLANARCONFIG_CONTIG, orientation = 1;
  std::uint16_t n_extra = 0, *extra = nullptr;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_EXTRASAMPLES, &n_extra, &extra);
  const bool has_orientation = TIFFGetField(tif, TIFFTAG_ORIENTATION, &orientation) == 1;
  if (!TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric)) fail_corrupt(name, "TIFF has no photometric tag");
  check_bomb(name, w, h);
  if (w == 0 || h == 0) fail_corrupt(name, "TIFF size is invalid");
  const bool gray = photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE;
  const bool layout_ok =
      !TIFFIsTiled(tif) && planar == PLANARCONFIG_CONTIG &&
      ((gray && (spp == 1 || spp == 2) && (bits == 1 || bits == 8 || bits == 16)) ||
       (photometric == PHOTOMETRIC_RGB && (spp == 3 || spp == 4) && (bits == 8 || bits == 16)) ||
       (photometric == PHOTOMETRIC_PALETTE && spp == 1 && (bits == 1 || bits == 2 || bits == 4 || bits == 8)) ||
       (photometric == PHOTOMETRIC_SEPARATED && spp == 4 && bits == 8));
  // Premultiplied alpha would need Pillow's un-premultiplying conversion: refused rather than approximated.
  const bool premultiplied = n_extra > 0 && extra && extra[0] == EXTRASAMPLE_ASSOCALPHA;
  if (!layout_ok || premultiplied)
    fail_unsupported(name, "TIFF with photometric " + std::to_string(photometric) + ", " + std::to_string(spp) +
                               "x" + std::to_string(bits) + "-bit samples" + (TIFFIsTiled(tif) ? ", tiled" : "") +
                               (premultiplied ? ", premultiplied alpha" : ""));
  std::uint16_t *red = nullptr, *green = nullptr, *blue = nullptr;
  if (photometric == PHOTOMETRIC_PALETTE && !TIFFGetField(tif, TIFFTAG_COLORMAP, &red, &green, &blue))
    fail_corrupt(name, "palette TIFF has no colour map");
  reset_bitmap(d.bitmap, static_cast<int>(w), static_cast<int>(h));
  std::vector<std::uint8_t> line(static_cast<std::size_t>(TIFFScanlineSize(tif)));
  for (std::uint32_t y = 0; y < h; ++y) {
    if (TIFFReadScanline(tif, line.data(), y, 0) < 0)
      fail_corrupt(name, error.empty() ? "image file is truncated" : error);
    const std::uint8_t* r = line.data();
    for (std::uint32_t x = 0; x < w; ++x) {
      std::uint8_t* o = &d.bitmap.pixels[(static_cast<std::size_t>(y) * w + x) * 3];
      if (photometric == PHOTOMETRIC_PALETTE) {
        const int per = 8 / bits;
        const int idx = bits == 8 ? r[x] : (r[x / per] >> (8 - bits * (x % per + 1))) & ((1 << bits) - 1);
        o[0] = static_cast<std::uint8_t>(red[idx] / 256);
        o[1] = static_cast<std::uint8_t>(green[idx] / 256);
        o[2] = static_cast<std::uint8_t>(blue[idx] / 256);
      } else if (gray) {
        int v;
        if (bits == 1) v = ((r[x / 8] >> (7 - x % 8)) & 1) ? 255 : 0;
        else if (bits == 8) v = r[x * spp];
        else v = (reinterpret_cast<const std::uint16_t*>(r)[x * spp] + 128) / 257;  // Pillow's I;16 -> 8 bit
        if (photometric == PHOTOMETRIC_MINISWHITE) v = 255 - v;
        o[0] = o[1] = o[2] = static_cast<std::uint8_t>(v);
      } else if (photometric == PHOTOMETRIC_SEPARATED) {  // CMYK, converted with Pillow's cmyk2rgb rounding
        const std::uint8_t* s = r + static_cast<std::size_t>(x) * 4;
        const int nk = 255 - s[3];
        for (int c = 0; c < 3; ++c) {
          const int t = s[c] * nk + 128;
          const int v = nk - (((t >> 8) + t) >> 8);
          o[c] = static_cast<std::uint8_t>(v < 0 ? 0 : v);
        }
      } else if (bits == 8) {
        std::memcpy(o, r + static_cast<std::size_t>(x) * spp, 3);
      } else {  // 16-bit RGB: Pillow keeps the high byte
        const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(r) + static_cast<std::size_t>(x) * spp;
        for (int c = 0; c < 3; ++c) o[c] = static_cast<std::uint8_t>(s[c] >> 8);
      }
    }
  }
  d.orientation = has_orientation ? (orientation >= 1 && orientation <= 8 ? orientation : 1) : 0;
  return;
}
#else
void decode_tiff(Bytes, const std::string& name, Decoded&) { fail_unsupported(name, "TIFF (built without libtiff)"); }
#endif

}  // namespace detail
}  // namespace der
