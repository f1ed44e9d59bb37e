// Shared by the per-format decoders in src/image/ (not installed, not part of the public API).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "der/error.hpp"
#include "der/image.hpp"

namespace der {
namespace detail {

// What a format decoder returns: upright-less RGB pixels plus the EXIF orientation it found (1 = none);
// `options` is its input (shrink-on-load target, pixel limit).
struct Decoded {
  Bitmap bitmap;
  int orientation = 1;
  DecodeOptions options;
};

struct Bytes {
  const std::uint8_t* data;
  std::size_t size;
};

// Little-endian readers for the parsed formats (BMP, GIF).
inline std::uint32_t le16(const std::uint8_t* p) { return p[0] | p[1] << 8; }
inline std::uint32_t le32(const std::uint8_t* p) { return le16(p) | le16(p + 2) << 16; }

// The reasons worded like der_deploy.images.load_image, so C++ and Python messages read alike.
[[noreturn]] void fail_corrupt(const std::string& name, const std::string& detail);
[[noreturn]] void fail_unsupported(const std::string& name, const std::string& format);

// Pillow's decompression-bomb rule: an error above 2 * Image.MAX_IMAGE_PIXELS (only a warning below it).
void check_bomb(const std::string& name, long long width, long long height);
// check_bomb, then d.options.max_pixels on a size decoded in full; from the header, before any pixel is decoded.
void check_size(const std::string& name, long long width, long long height, const Decoded& d);
// "too large: W×H > LIMIT pixels; raise --max-pixels" (der_deploy.images.too_large); scale > 1: DCT-scaled size.
[[noreturn]] void fail_too_large(const std::string& name, long long width, long long height, long long limit,
                                 int scale);

// Orientation from an EXIF blob (optionally starting with "Exif\0\0", once or twice, then a TIFF header and
// IFD0): 2..8 to act on, 0 when the tag is absent (then XMP may supply it, as in Pillow), 1 when present but
// nothing to do, -1 when the blob is not TIFF-structured (Pillow then fails the whole load).
int exif_orientation(Bytes exif);
// Orientation from XMP text: the first `tiff:Orientation="N"` or `tiff:Orientation>N`; 0 when absent.
int xmp_orientation(Bytes xmp);

// Gray8 rows -> RGB8.
void gray_to_rgb(const std::uint8_t* in, std::uint8_t* out, std::size_t n);

// Size `b` to w x h and zero it, reusing its storage (decoders write into reused per-thread buffers).
void reset_bitmap(Bitmap& b, long long w, long long h);

// Format decoders fill `d` (its bitmap storage may be reused from an earlier image).


void decode_jpeg(Bytes in, const std::string& name, Decoded& d);
void decode_png(Bytes in, const std::string& name, Decoded& d);
void decode_bmp(Bytes in, const std::string& name, Decoded& d);
void decode_pnm(Bytes in, const std::string& name, Decoded& d);
void decode_gif(Bytes in, const std::string& name, Decoded& d);
void decode_webp(Bytes in, const std::string& name, Decoded& d);
void decode_tiff(Bytes in, const std::string& name, Decoded& d);

// resize() into `out`, reusing its storage and a per-thread intermediate buffer.
void resize_into(const Image& src, int width, int height, Interpolation interp, Bitmap& out);

}  // namespace detail
}  // namespace der
