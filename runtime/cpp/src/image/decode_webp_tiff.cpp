// WebP (libwebp's animation decoder with default options, which is what Pillow uses) and TIFF (libtiff,
// strip-based 1/8/16-bit gray, RGB, palette, CMYK). Both codecs are optional: without them the format is refused
// with an error naming it. What a layout here does not cover is refused too, never approximated.
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

// ----------------------------------------------------------------------------------------------------------- WebP
#ifdef DER_HAVE_WEBP
void decode_webp(Bytes in, const std::string& name, Decoded& d) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(in.data, in.size, &features) != VP8_STATUS_OK) fail_corrupt(name, "could not create decoder object");
  // Before the animation decoder, which allocates two RGBA canvases as soon as it is created.
  check_size(name, features.width, features.height, d);
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
  // Pillow reports a TIFF tagged with orientation 5-8 by its upright size, so the limit's message does too.
  const bool sideways = has_orientation && orientation >= 5 && orientation <= 8;
  check_size(name, sideways ? h : w, sideways ? w : h, d);
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
