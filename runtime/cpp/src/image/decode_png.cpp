// PNG through libpng, rows read untransformed and converted here the way Pillow's PNG modes convert to RGB:
// 1/2/4-bit gray scaled to 0..255, 16-bit gray rint(v / 257), 16-bit colour and 16-bit gray+alpha keep the
// high byte, alpha (and tRNS) dropped, palette looked up. EXIF comes from eXIf or a "Raw profile type exif"
// text chunk, with XMP's tiff:Orientation as the fallback, before or after the image data as Pillow reads both.
#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

#include <png.h>

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
