// PNG through libpng, rows read untransformed and converted here the way Pillow's PNG modes convert to RGB:
// 1/2/4-bit gray scaled to 0..255, 16-bit gray rint(v / 257), 16-bit colour and 16-bit gray+alpha keep the
// high byte, alpha (and tRNS) dropped, palette looked up. EXIF comes from eXIf or a "Raw profile type exif"
// text chunk, with XMP's tiff:Orientation as the fallback, before or after the image data as Pillow reads both.
#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

#include <png.h>
#include <zlib.h>

#include "decode_internal.hpp"

namespace der {
namespace detail {
namespace {

struct Reader {
  Bytes in;
  std::size_t pos = 0;
  char message[256] = {0};
};

void on_read(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (r->in.size - r->pos < n) png_error(png, "image file is truncated");
  std::memcpy(out, r->in.data + r->pos, n);
  r->pos += n;
}

void on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<Reader*>(png_get_error_ptr(png));
  std::strncpy(r->message, msg ? msg : "libpng error", sizeof r->message - 1);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "Raw profile type exif" text: "\nexif\n<length>\n<hex lines>"; Pillow joins the lines after the third
// newline and reads them as hex.
bool raw_profile_exif(const png_text& t, std::vector<std::uint8_t>& out) {
  const char* s = t.text;
  const std::size_t n = t.itxt_length ? t.itxt_length : t.text_length;
  std::size_t i = 0;
  for (int nl = 0; i < n && nl < 3; ++i)
    if (s[i] == '\n') ++nl;
  std::string hex;
  for (; i < n; ++i)
    if (s[i] != '\n') hex.push_back(s[i]);
  if (hex.size() % 2) return false;
  out.clear();
  for (std::size_t j = 0; j < hex.size(); j += 2) {
    const int a = hex_value(hex[j]), b = hex_value(hex[j + 1]);
    if (a < 0 || b < 0) return false;
    out.push_back(static_cast<std::uint8_t>(a * 16 + b));
  }
  return true;
}

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  png_infop end = nullptr;
  Reader reader;
  std::vector<std::uint8_t> raw;
  std::vector<png_bytep> rows;
  ~PngState() { png_destroy_read_struct(&png, &info, &end); }
};

// The orientation the text/eXIf chunks of `info` give: same precedence as Pillow's getexif.
// The last eXIf chunk's payload, found by walking the chunk list: libpng drops an eXIf it finds malformed,
// but Pillow keeps it (and then fails the load), so the raw bytes are needed.
bool find_exif_chunk(Bytes in, Bytes& out) {
  bool found = false;
  for (std::size_t pos = 8; pos + 12 <= in.size;) {
    const std::uint8_t* c = in.data + pos;
    const std::size_t len = std::size_t(c[0]) << 24 | c[1] << 16 | c[2] << 8 | c[3];
    if (len > in.size - pos - 12) break;
    if (std::memcmp(c + 4, "eXIf", 4) == 0) {
      out = Bytes{c + 8, len};
      found = true;
    }
    if (std::memcmp(c + 4, "IEND", 4) == 0) break;
    pos += 12 + len;
  }
  return found;
}

// zlib.decompressobj().decompress(data, limit) as Pillow's _safe_zlib_decompress calls it: the inflated bytes
// (at most `limit`) into `out` when given, else only counted. Returns 1 when more than `limit` would come out
// (input left over at the limit: Pillow's "too large"), -1 for a zlib error, 0 otherwise (a stream cut short
// is not an error there either).
int bounded_inflate(Bytes data, std::size_t limit, std::size_t& produced, std::vector<std::uint8_t>* out) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return -1;
  z.next_in = const_cast<Bytef*>(data.data);
  z.avail_in = static_cast<uInt>(data.size);
  std::uint8_t buf[16384];
  produced = 0;
  int rc = Z_OK, result = 0;
  while (z.avail_in > 0 && rc != Z_STREAM_END) {
    if (produced == limit) {
      result = 1;
      break;
    }
    z.next_out = buf;
    z.avail_out = static_cast<uInt>(std::min(sizeof buf, limit - produced));
    const uInt room = z.avail_out;
    rc = inflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      result = -1;
      break;
    }
    const std::size_t got = room - z.avail_out;
    if (out) out->insert(out->end(), buf, buf + got);
    produced += got;
    if (rc == Z_BUF_ERROR && got == 0) break;  // nothing more can come out of what is left
  }
  inflateEnd(&z);
  return result;
}

// Code points of UTF-8 text, or -1 when it is not valid UTF-8 (Python's strict decoder).
long long utf8_length(const std::uint8_t* p, std::size_t n) {
  long long count = 0;
  for (std::size_t i = 0; i < n; ++count) {
    const std::uint8_t c = p[i];
    const int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0 || n - i <= static_cast<std::size_t>(extra)) return extra == 0 ? count + 1 : -1;
    std::uint32_t cp = extra == 0 ? c : c & (0x3f >> extra);
    for (int k = 1; k <= extra; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return -1;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    static const std::uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
    i += extra + 1;
  }
  return count;
}

// Pillow's PNG text limits (PngImagePlugin), on the raw chunks before libpng sees them: a zTXt, compressed iTXt
// or iCCP chunk inflating beyond MAX_TEXT_CHUNK (1 MiB), or more than MAX_TEXT_MEMORY (64 MiB) of text in all,
// fails the file, as does an unknown zTXt/iCCP compression method. libpng would inflate such a "text bomb"
// without bound (a 300 KB file took 300 MB) or skip what Pillow refuses.
void check_text_chunks(Bytes in, const std::string& name) {
  constexpr std::size_t kMaxChunk = std::size_t(1) << 20, kMaxMemory = 64 * kMaxChunk;
  std::size_t memory = 0;
  std::vector<std::uint8_t> text;
  for (std::size_t pos = 8; pos + 12 <= in.size;) {
    const std::uint8_t* c = in.data + pos;
    const std::size_t len = std::size_t(c[0]) << 24 | c[1] << 16 | c[2] << 8 | c[3];
    if (len > in.size - pos - 12 || std::memcmp(c + 4, "IEND", 4) == 0) break;
    pos += 12 + len;
    const std::uint8_t* p = c + 8;
    const std::uint8_t* nul = static_cast<const std::uint8_t*>(std::memchr(p, 0, len));
    const std::size_t key = nul ? static_cast<std::size_t>(nul - p) : len;  // the keyword's length
    std::size_t produced = 0;
    if (std::memcmp(c + 4, "tEXt", 4) == 0) {
      if (key) memory += nul ? len - key - 1 : 0;
    } else if (std::memcmp(c + 4, "zTXt", 4) == 0) {
      const bool has_value = nul && len > key + 1;
      if (has_value && p[key + 1] != 0)
        fail_corrupt(name, "Unknown compression method " + std::to_string(p[key + 1]) + " in zTXt chunk");
      const int rc = has_value ? bounded_inflate(Bytes{p + key + 2, len - key - 2}, kMaxChunk, produced, nullptr) : 0;
      if (rc > 0) fail_corrupt(name, "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK");
      if (key && rc == 0) memory += produced;
    } else if (std::memcmp(c + 4, "iCCP", 4) == 0) {
      const std::size_t at = nul ? key + 1 : 0;  // Pillow's s[s.find(b"\0") + 1], -1 when there is no NUL
      if (at >= len) fail_corrupt(name, "iCCP chunk is truncated");
      if (p[at] != 0) fail_corrupt(name, "Unknown compression method " + std::to_string(p[at]) + " in iCCP chunk");
      if (bounded_inflate(Bytes{p + at + 1, len - at - 1}, kMaxChunk, produced, nullptr) > 0)
        fail_corrupt(name, "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK");
    } else if (std::memcmp(c + 4, "iTXt", 4) == 0) {
      if (!nul || len - key - 1 < 2) continue;
      const std::uint8_t *r = p + key + 3, *end = p + len;
      const bool compressed = p[key + 1] != 0, known_method = p[key + 2] == 0;
      const auto* lang_end = static_cast<const std::uint8_t*>(std::memchr(r, 0, end - r));
      const auto* tk_end = lang_end ? static_cast<const std::uint8_t*>(std::memchr(lang_end + 1, 0, end - lang_end - 1))
                                    : nullptr;
      if (!tk_end || (compressed && !known_method)) continue;  // Pillow ignores such a chunk
      const Bytes value{tk_end + 1, static_cast<std::size_t>(end - tk_end - 1)};
      text.clear();
      if (compressed) {
        const int rc = bounded_inflate(value, kMaxChunk, produced, &text);
        if (rc > 0) fail_corrupt(name, "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK");
        if (rc < 0) continue;
      } else {
        text.assign(value.data, value.data + value.size);
      }
      const long long chars = utf8_length(text.data(), text.size());
      if (chars >= 0 && utf8_length(r, lang_end - r) >= 0 && utf8_length(lang_end + 1, tk_end - lang_end - 1) >= 0)
        memory += static_cast<std::size_t>(chars);
    }
    if (memory > kMaxMemory)
      fail_corrupt(name, "Too much memory used in text chunks: " + std::to_string(memory) + ">MAX_TEXT_MEMORY");
  }
}

int orientation_of(png_structp png, png_infop info, png_infop end, Bytes in, const std::string& name) {
  Bytes exif_chunk{nullptr, 0};
  const bool have_exif = find_exif_chunk(in, exif_chunk);
  Bytes xmp{nullptr, 0};
  std::vector<std::uint8_t> raw;
  bool have_raw = false;
  for (png_infop i : {info, end}) {
    png_textp text = nullptr;
    int count = 0;
    png_get_text(png, i, &text, &count);
    for (int k = 0; k < count; ++k) {
      const std::string key = text[k].key ? text[k].key : "";
      if (key == "Raw profile type exif" && !have_raw) have_raw = raw_profile_exif(text[k], raw);
      if (key == "XML:com.adobe.xmp" && !xmp.data)
        xmp = Bytes{reinterpret_cast<const std::uint8_t*>(text[k].text),
                    text[k].itxt_length ? text[k].itxt_length : text[k].text_length};
    }
  }
  int orientation = 0;
  if (have_exif) orientation = exif_orientation(exif_chunk);
  else if (have_raw) orientation = exif_orientation(Bytes{raw.data(), raw.size()});
  if (orientation < 0) fail_corrupt(name, "EXIF block is not a valid TIFF structure");
  if (orientation == 0 && xmp.data) orientation = xmp_orientation(xmp);
  return orientation;
}

}  // namespace

void decode_png(Bytes in, const std::string& name, Decoded& d) {
  check_text_chunks(in, name);
  PngState s;
  s.reader.in = in;
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s.reader, on_error, on_warning);
  if (!s.png) throw ImageError(name, "out of memory creating the PNG decoder");
  s.info = png_create_info_struct(s.png);
  s.end = png_create_info_struct(s.png);
  if (!s.info || !s.end) throw ImageError(name, "out of memory creating the PNG decoder");
  if (setjmp(png_jmpbuf(s.png))) fail_corrupt(name, s.reader.message);
  png_set_read_fn(s.png, &s.reader, on_read);
  // Pillow verifies every chunk CRC up to the image data (ancillary ones too).
  png_set_crc_action(s.png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
  png_set_user_limits(s.png, 0x7fffffff, 0x7fffffff);  // size policy is the bomb check below
  png_set_chunk_malloc_max(s.png, 0);
#ifdef PNG_CHECK_FOR_INVALID_INDEX_SUPPORTED
  png_set_check_for_invalid_index(s.png, 0);
#endif
  png_read_info(s.png, s.info);
  // Pillow does not check CRCs from the image data on, so neither do we.
  png_set_crc_action(s.png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
  png_uint_32 w32 = 0, h32 = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(s.png, s.info, &w32, &h32, &depth, &color, &interlace, nullptr, nullptr);
  check_size(name, w32, h32, d);
  const int w = static_cast<int>(w32), h = static_cast<int>(h32);
  png_set_interlace_handling(s.png);
  png_read_update_info(s.png, s.info);
  const std::size_t rowbytes = png_get_rowbytes(s.png, s.info);
  s.raw.resize(rowbytes * h);
  s.rows.resize(h);
  for (int y = 0; y < h; ++y) s.rows[y] = s.raw.data() + rowbytes * y;
  png_read_image(s.png, s.rows.data());

  png_colorp palette = nullptr;
  int n_palette = 0;
  if (color == PNG_COLOR_TYPE_PALETTE) png_get_PLTE(s.png, s.info, &palette, &n_palette);

  d.bitmap.width = w;
  d.bitmap.height = h;
  d.bitmap.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    const std::uint8_t* r = s.rows[y];
    std::uint8_t* o = &d.bitmap.pixels[static_cast<std::size_t>(y) * w * 3];
    for (int x = 0; x < w; ++x, o += 3) {
      switch (color) {
        case PNG_COLOR_TYPE_GRAY: {
          int v;
          if (depth == 16) {
            v = ((r[2 * x] << 8 | r[2 * x + 1]) + 128) / 257;
          } else if (depth == 8) {
            v = r[x];
          } else {
            const int per = 8 / depth, shift = 8 - depth * (x % per + 1);
            v = (r[x / per] >> shift) & ((1 << depth) - 1);
            v = v * 255 / ((1 << depth) - 1);
          }
          o[0] = o[1] = o[2] = static_cast<std::uint8_t>(v);
          break;
        }
        case PNG_COLOR_TYPE_GRAY_ALPHA:
          o[0] = o[1] = o[2] = depth == 16 ? r[4 * x] : r[2 * x];
          break;
        case PNG_COLOR_TYPE_RGB:
        case PNG_COLOR_TYPE_RGB_ALPHA: {
          const int channels = color == PNG_COLOR_TYPE_RGB ? 3 : 4;
          const int bytes = depth == 16 ? 2 : 1;
          const std::uint8_t* p = r + static_cast<std::size_t>(x) * channels * bytes;
          for (int c = 0; c < 3; ++c) o[c] = p[c * bytes];
          break;
        }
        case PNG_COLOR_TYPE_PALETTE: {
          const int per = 8 / depth, shift = 8 - depth * (x % per + 1);
          const int idx = depth == 8 ? r[x] : (r[x / per] >> shift) & ((1 << depth) - 1);
          if (idx < n_palette) {
            o[0] = palette[idx].red;
            o[1] = palette[idx].green;
            o[2] = palette[idx].blue;
          } else {
            o[0] = o[1] = o[2] = 0;
          }
          break;
        }
        default:
          fail_corrupt(name, "unknown PNG colour type " + std::to_string(color));
      }
    }
  }
  // Chunks after the image data: Pillow reads them (EXIF/XMP may sit there) but ignores damage past IDAT.
  if (!setjmp(png_jmpbuf(s.png))) png_read_end(s.png, s.end);
  d.orientation = orientation_of(s.png, s.info, s.end, in, name);
  return;
}

}  // namespace detail
}  // namespace der
