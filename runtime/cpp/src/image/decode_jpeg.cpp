// JPEG through libjpeg-turbo's libjpeg API (islow IDCT, fancy upsampling: libjpeg's defaults, which Pillow
// keeps when Image.draft only sets a scale, as der_deploy.images does; DCT scaling via scale_num/scale_denom). Errors unwind through a per-decode setjmp, so there is no global
// state. A premature end of data is an error (Pillow refuses truncated files), and, like the Python runtime, a
// JPEG with no end-of-image marker after its first start-of-scan marker is refused.
#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

#include "decode_internal.hpp"

namespace der {
namespace detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void on_message(j_common_ptr cinfo, int level) {
  // Warnings about corrupt entropy data are tolerated as Pillow tolerates them; running out of data is not,
  // unless every row is already out: Pillow ignores a jpeg_finish_decompress that wants more data then (a
  // damaged file whose entropy data swallowed its EOI; libjpeg's memory source supplies a fake one).
  const auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  const bool rows_done = d->output_height > 0 && d->output_scanline >= d->output_height;
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF && !rows_done) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof err->message, "image file is truncated");
    std::longjmp(err->jump, 1);
  }
}

void silent(j_common_ptr) {}

// The Python runtime's test: the first FF DA (start of scan) byte pair, then an FF D9 somewhere after it.
bool has_eoi_after_sos(Bytes in) {
  std::size_t sos = in.size;
  for (std::size_t i = 0; i + 1 < in.size; ++i)
    if (in.data[i] == 0xff && in.data[i + 1] == 0xda) {
      sos = i;
      break;
    }
  if (sos == in.size) return false;
  for (std::size_t i = in.size - 1; i > sos + 1; --i)
    if (in.data[i - 1] == 0xff && in.data[i] == 0xd9) return true;
  return false;
}

inline std::uint8_t muldiv255(int a, int b) {
  const int t = a * b + 128;
  return static_cast<std::uint8_t>(((t >> 8) + t) >> 8);
}

// Pillow reads CMYK JPEGs as Adobe-inverted ("CMYK;I") and converts with R = k' - k' * c' / 255 (c' = 255 - c,
// k' = 255 - (255 - k)), rounded its fixed-point way; this is that arithmetic on the decoder's raw CMYK.
void cmyk_row_to_rgb(const std::uint8_t* in, std::uint8_t* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i, in += 4, out += 3) {
    const int nk = in[3];
    for (int c = 0; c < 3; ++c) {
      const int v = nk - muldiv255(255 - in[c], nk);
      out[c] = static_cast<std::uint8_t>(v < 0 ? 0 : v);
    }
  }
}

// The state that must survive a longjmp lives outside the function that calls setjmp.
struct JpegState {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  std::vector<std::uint8_t> row;
  std::vector<std::uint8_t> exif;
  Bytes xmp{nullptr, 0};
  bool has_exif = false;
  JpegState() { std::memset(&cinfo, 0, sizeof cinfo); }
  ~JpegState() { jpeg_destroy_decompress(&cinfo); }
};

}  // namespace

void decode_jpeg(Bytes in, const std::string& name, Decoded& d) {
  JpegState s;
  s.cinfo.err = jpeg_std_error(&s.err.pub);
  s.err.pub.error_exit = on_error;
  s.err.pub.emit_message = on_message;
  s.err.pub.output_message = silent;
  if (setjmp(s.err.jump)) fail_corrupt(name, s.err.message);
  jpeg_create_decompress(&s.cinfo);
  jpeg_mem_src(&s.cinfo, in.data, static_cast<unsigned long>(in.size));
  jpeg_save_markers(&s.cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&s.cinfo, TRUE);
  const int comps = s.cinfo.num_components;
  if (comps != 1 && comps != 3 && comps != 4) fail_corrupt(name, "cannot handle " + std::to_string(comps) + "-layer images");
  const long long full_w = s.cinfo.image_width, full_h = s.cinfo.image_height;
  check_bomb(name, full_w, full_h);

  // APP1 segments as Pillow keeps them: EXIF payloads concatenated (the first keeps its "Exif\0\0"), the last
  // XMP packet (after its namespace string) wins.
  for (jpeg_saved_marker_ptr m = s.cinfo.marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    static const char kXmp[] = "http://ns.adobe.com/xap/1.0/";
    if (m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) {
      s.exif.insert(s.exif.end(), m->data + (s.has_exif ? 6 : 0), m->data + m->data_length);
      s.has_exif = true;
    } else if (m->data_length >= sizeof kXmp && std::memcmp(m->data, kXmp, sizeof kXmp) == 0) {
      s.xmp = Bytes{m->data + sizeof kXmp, m->data_length - sizeof kXmp};
    }
  }

  int orientation = s.has_exif ? exif_orientation(Bytes{s.exif.data(), s.exif.size()}) : 0;
  // Pillow reads a JPEG's EXIF while opening it, to find the DPI, unless the JFIF header already gave one;
  // that read swallows an unreadable EXIF (then there is no orientation, and XMP is not consulted either).
  // Without that early read, exif_transpose meets the error and the Python runtime fails the file.
  const bool jfif_dpi = s.cinfo.saw_JFIF_marker && (s.cinfo.density_unit == 1 || s.cinfo.density_unit == 2);
  const bool bad_exif = orientation < 0 && jfif_dpi;
  if (orientation < 0) orientation = 1;
  if (orientation == 0 && s.xmp.data) orientation = xmp_orientation(s.xmp);

  // Shrink-on-load: Pillow's draft rule, on the stored image (sides swapped when it is stored sideways). The
  // Python runtime reads the EXIF before decoding to choose the scale, so an unreadable one fails it there.
  int scale = 1, counted = 1;
  const DecodeOptions& opt = d.options;
  if (opt.draft_width > 0 && opt.draft_height > 0) {
    if (bad_exif) fail_corrupt(name, "EXIF block is not a valid TIFF structure");
    const bool sideways = orientation >= 5 && orientation <= 8;
    const long long tw = sideways ? opt.draft_height : opt.draft_width;
    const long long th = sideways ? opt.draft_width : opt.draft_height;
    const long long fit = std::min(full_w / tw, full_h / th);
    scale = fit >= 8 ? 8 : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
    // A progressive or non-interleaved file keeps every coefficient of the full image, whatever the scale.
    counted = jpeg_has_multiple_scans(&s.cinfo) ? 1 : scale;
  }
  if (opt.max_pixels > 0 && ((full_w + counted - 1) / counted) * ((full_h + counted - 1) / counted) > opt.max_pixels)
    fail_too_large(name, full_w, full_h, opt.max_pixels, counted);

  s.cinfo.out_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
  s.cinfo.dct_method = JDCT_ISLOW;
  s.cinfo.do_fancy_upsampling = TRUE;
  s.cinfo.scale_num = 1;
  s.cinfo.scale_denom = static_cast<unsigned int>(scale);
  jpeg_start_decompress(&s.cinfo);
  const int w = static_cast<int>(s.cinfo.output_width), h = static_cast<int>(s.cinfo.output_height);
  d.bitmap.width = w;
  d.bitmap.height = h;
  d.bitmap.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  // Several rows per call (the decoder's natural row group) saves per-call overhead.
  const int group = s.cinfo.rec_outbuf_height > 0 && s.cinfo.rec_outbuf_height <= 16 ? s.cinfo.rec_outbuf_height : 1;
  const std::size_t in_row = static_cast<std::size_t>(w) * s.cinfo.output_components;
  s.row.resize(in_row * group);
  while (s.cinfo.output_scanline < s.cinfo.output_height) {
    const int y = static_cast<int>(s.cinfo.output_scanline);
    const int n = std::min<int>(group, h - y);
    std::uint8_t* out = &d.bitmap.pixels[static_cast<std::size_t>(y) * w * 3];
    JSAMPROW rows[16];
    for (int i = 0; i < n; ++i) rows[i] = comps == 3 ? out + static_cast<std::size_t>(i) * w * 3 : &s.row[in_row * i];
    const int got = static_cast<int>(jpeg_read_scanlines(&s.cinfo, rows, static_cast<JDIMENSION>(n)));
    if (comps != 3)
      for (int i = 0; i < got; ++i) {
        if (comps == 1) gray_to_rgb(rows[i], out + static_cast<std::size_t>(i) * w * 3, w);
        else cmyk_row_to_rgb(rows[i], out + static_cast<std::size_t>(i) * w * 3, w);
      }
  }
  jpeg_finish_decompress(&s.cinfo);
  if (!has_eoi_after_sos(in))
    throw ImageError(name, "truncated or corrupt JPEG (no end-of-image marker); re-download or re-encode it");

  if (bad_exif) fail_corrupt(name, "EXIF block is not a valid TIFF structure");
  d.orientation = orientation;
  return;
}

}  // namespace detail
}  // namespace der
