// Formats beyond JPEG and PNG. Not implemented yet: each one is refused with a clear error.
#include "decode_internal.hpp"

namespace der {
namespace detail {

Decoded decode_bmp(Bytes, const std::string& name) { fail_unsupported(name, "BMP"); }
Decoded decode_pnm(Bytes, const std::string& name) { fail_unsupported(name, "PNM"); }
Decoded decode_gif(Bytes, const std::string& name) { fail_unsupported(name, "GIF"); }
Decoded decode_webp(Bytes, const std::string& name) { fail_unsupported(name, "WebP"); }
Decoded decode_tiff(Bytes, const std::string& name) { fail_unsupported(name, "TIFF"); }

}  // namespace detail
}  // namespace der
