// BMP and PNM (parsed here: both are simple layouts), GIF (giflib, first frame), WebP (libwebp's animation
// decoder with default options, which is what Pillow uses), TIFF (libtiff, strip-based 1/8/16-bit gray, RGB,
// palette, CMYK). What a layout here does not cover is refused with an error naming the format, never approximated.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "decode_internal.hpp"

#ifdef DER_HAVE_GIF
#include <gif_lib.h>
#endif
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

Bitmap blank(int w, int h) {
  Bitmap b;
  b.width = w;
  b.height = h;
  b.pixels.assign(static_cast<std::size_t>(w) * h * 3, 0);
  return b;
}

void put(Bitmap& b, int x, int y, std::uint8_t r, std::uint8_t g, std::uint8_t bl) {
  std::uint8_t* o = &b.pixels[(static_cast<std::size_t>(y) * b.width + x) * 3];
  o[0] = r;
  o[1] = g;
  o[2] = bl;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------ BMP
Decoded decode_bmp(Bytes in, const std::string& name) {
  if (in.size < 26) fail_corrupt(name, "BMP header is truncated");
  const std::uint8_t* p = in.data;
  const std::uint32_t offset = le32(p + 10), header = le32(p + 14);
  long long w, h;
  int bpp, compression = 0, colors = 0, pal_entry = 4;
  if (header == 12) {
    w = le16(p + 18);
    h = static_cast<std::int16_t>(le16(p + 20));
    bpp = static_cast<int>(le16(p + 24));
    pal_entry = 3;
  } else if (header >= 40 && in.size >= 14 + 40) {
    w = static_cast<std::int32_t>(le32(p + 18));
    h = static_cast<std::int32_t>(le32(p + 22));
    bpp = static_cast<int>(le16(p + 28));
    compression = static_cast<int>(le32(p + 30));
    colors = static_cast<int>(le32(p + 46));
  } else {
    fail_unsupported(name, "BMP with a " + std::to_string(header) + "-byte header");
  }
  const bool top_down = h < 0;
  if (h < 0) h = -h;
  if (w <= 0 || h <= 0) fail_corrupt(name, "BMP size is invalid");
  check_bomb(name, w, h);
  // Uncompressed layouts (and bit fields with the standard masks); RLE-compressed BMPs are refused.
  std::uint32_t masks[3] = {0, 0, 0};
  if (compression == 3 && (bpp == 16 || bpp == 32)) {
    const std::size_t at = header == 40 ? 14 + 40 : 14 + 40;
    if (in.size < at + 12) fail_corrupt(name, "BMP bit masks are truncated");
    for (int i = 0; i < 3; ++i) masks[i] = le32(p + at + 4 * i);
    const bool ok32 = bpp == 32 && masks[0] == 0xff0000 && masks[1] == 0xff00 && masks[2] == 0xff;
    const bool ok565 = bpp == 16 && masks[0] == 0xf800 && masks[1] == 0x7e0 && masks[2] == 0x1f;
    const bool ok555 = bpp == 16 && masks[0] == 0x7c00 && masks[1] == 0x3e0 && masks[2] == 0x1f;
    if (!ok32 && !ok565 && !ok555) fail_unsupported(name, "BMP with custom bit-field masks");
  } else if (compression != 0) {
    fail_unsupported(name, "BMP with RLE/JPEG/PNG compression");
  }
  if (bpp != 1 && bpp != 2 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
    fail_corrupt(name, "unsupported BMP bit depth " + std::to_string(bpp));
  std::vector<std::uint8_t> palette;  // RGB triples
  if (bpp <= 8) {
    const int n = colors > 0 && colors <= 256 ? colors : 1 << bpp;
    const std::size_t at = 14 + header;
    for (int i = 0; i < n && at + (i + 1) * std::size_t(pal_entry) <= in.size; ++i) {
      const std::uint8_t* e = p + at + i * std::size_t(pal_entry);
      palette.insert(palette.end(), {e[2], e[1], e[0]});
    }
  }
  const std::size_t stride = ((static_cast<std::size_t>(w) * bpp + 31) / 32) * 4;
  const std::size_t row_bytes = (static_cast<std::size_t>(w) * bpp + 7) / 8;
  if (offset > in.size || (in.size - offset) < stride * (h - 1) + row_bytes)
    fail_corrupt(name, "image file is truncated");
  Decoded d;
  d.bitmap = blank(static_cast<int>(w), static_cast<int>(h));
  const bool is555 = bpp == 16 && !(compression == 3 && masks[1] == 0x7e0);
  for (long long y = 0; y < h; ++y) {
    const std::uint8_t* r = p + offset + stride * (top_down ? y : h - 1 - y);
    for (long long x = 0; x < w; ++x) {
      switch (bpp) {
        case 24: put(d.bitmap, x, y, r[3 * x + 2], r[3 * x + 1], r[3 * x]); break;
        case 32: put(d.bitmap, x, y, r[4 * x + 2], r[4 * x + 1], r[4 * x]); break;
        case 16: {
          const std::uint32_t v = le16(r + 2 * x);
          if (is555)
            put(d.bitmap, x, y, ((v >> 10) & 31) * 255 / 31, ((v >> 5) & 31) * 255 / 31, (v & 31) * 255 / 31);
          else
            put(d.bitmap, x, y, ((v >> 11) & 31) * 255 / 31, ((v >> 5) & 63) * 255 / 63, (v & 31) * 255 / 31);
          break;
        }
        default: {
          const int per = 8 / bpp;
          const std::size_t idx = (r[x / per] >> (8 - bpp * (x % per + 1))) & ((1 << bpp) - 1);
          if (3 * idx + 2 < palette.size())
            put(d.bitmap, x, y, palette[3 * idx], palette[3 * idx + 1], palette[3 * idx + 2]);
        }
      }
    }
  }
  return d;
}

// ------------------------------------------------------------------------------------------------------------ PNM
Decoded decode_pnm(Bytes in, const std::string& name) {
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
  Decoded d;
  d.bitmap = blank(static_cast<int>(w), static_cast<int>(h));
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
  return d;
}

// ------------------------------------------------------------------------------------------------------------ GIF
#ifdef DER_HAVE_GIF
namespace {
struct GifReader {
  Bytes in;
  std::size_t pos = 0;
};
int gif_read(GifFileType* gif, GifByteType* out, int n) {
  auto* r = static_cast<GifReader*>(gif->UserData);
  const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(n), r->in.size - r->pos);
  std::memcpy(out, r->in.data + r->pos, k);
  r->pos += k;
  return static_cast<int>(k);
}
struct GifCloser {
  GifFileType* gif;
  ~GifCloser() {
    int err = 0;
    if (gif) DGifCloseFile(gif, &err);
  }
};
}  // namespace

Decoded decode_gif(Bytes in, const std::string& name) {
  GifReader reader{in};
  int err = 0;
  GifCloser g{DGifOpen(&reader, gif_read, &err)};
  if (!g.gif) fail_corrupt(name, GifErrorString(err) ? GifErrorString(err) : "cannot open GIF");
  GifFileType* gif = g.gif;
  long long cw = gif->SWidth, ch = gif->SHeight;
  check_bomb(name, cw, ch);
  int transparent = -1;
  for (;;) {
    GifRecordType type;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR) fail_corrupt(name, "image file is truncated");
    if (type == TERMINATE_RECORD_TYPE) fail_corrupt(name, "image not found in GIF frame");
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* block = nullptr;
      if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) fail_corrupt(name, "image file is truncated");
      if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4 && (block[1] & 1)) transparent = block[4];
      while (block)
        if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) fail_corrupt(name, "image file is truncated");
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif) == GIF_ERROR) fail_corrupt(name, "image file is truncated");
    const GifImageDesc& desc = gif->Image;
    // A first frame reaching past the logical screen grows the canvas, as in Pillow.
    cw = std::max<long long>(cw, desc.Left + desc.Width);
    ch = std::max<long long>(ch, desc.Top + desc.Height);
    check_bomb(name, cw, ch);
    const ColorMapObject* map = desc.ColorMap ? desc.ColorMap : gif->SColorMap;
    auto colour = [&](int idx, std::uint8_t* o) {
      if (map && idx < map->ColorCount) {
        o[0] = map->Colors[idx].Red;
        o[1] = map->Colors[idx].Green;
        o[2] = map->Colors[idx].Blue;
      } else if (!map) {  // no palette at all: Pillow reads the indices as gray levels
        o[0] = o[1] = o[2] = static_cast<std::uint8_t>(idx);
      } else {
        o[0] = o[1] = o[2] = 0;
      }
    };
    // Outside the frame the canvas holds the transparent index if there is one, else index 0.
    std::uint8_t fill[3];
    colour(transparent >= 0 ? transparent : 0, fill);
    Decoded d;
    d.bitmap = blank(static_cast<int>(cw), static_cast<int>(ch));
    for (std::size_t i = 0; i < d.bitmap.pixels.size(); i += 3) std::memcpy(&d.bitmap.pixels[i], fill, 3);
    std::vector<GifPixelType> line(desc.Width);
    std::vector<int> rows;  // stored row order -> frame row
    if (desc.Interlace) {
      static const int kStart[4] = {0, 4, 2, 1}, kStep[4] = {8, 8, 4, 2};
      for (int pass = 0; pass < 4; ++pass)
        for (int y = kStart[pass]; y < desc.Height; y += kStep[pass]) rows.push_back(y);
    } else {
      for (int y = 0; y < desc.Height; ++y) rows.push_back(y);
    }
    for (int y : rows) {
      if (DGifGetLine(gif, line.data(), desc.Width) == GIF_ERROR) fail_corrupt(name, "image file is truncated");
      for (int x = 0; x < desc.Width; ++x)
        colour(line[x], &d.bitmap.pixels[(static_cast<std::size_t>(desc.Top + y) * cw + desc.Left + x) * 3]);
    }
    return d;
  }
}
#else
Decoded decode_gif(Bytes, const std::string& name) { fail_unsupported(name, "GIF (built without giflib)"); }
#endif

// ----------------------------------------------------------------------------------------------------------- WebP
#ifdef DER_HAVE_WEBP
Decoded decode_webp(Bytes in, const std::string& name) {
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
  Decoded d;
  d.bitmap = blank(static_cast<int>(info.canvas_width), static_cast<int>(info.canvas_height));
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
  return d;
}
#else
Decoded decode_webp(Bytes, const std::string& name) { fail_unsupported(name, "WebP (built without libwebp)"); }
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

Decoded decode_tiff(Bytes in, const std::string& name) {
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
  Decoded d;
  d.bitmap = blank(static_cast<int>(w), static_cast<int>(h));
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
  return d;
}
#else
Decoded decode_tiff(Bytes, const std::string& name) { fail_unsupported(name, "TIFF (built without libtiff)"); }
#endif

}  // namespace detail
}  // namespace der
