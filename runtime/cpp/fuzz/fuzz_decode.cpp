// libFuzzer harness over the image layer's entry point (scripts/fuzz.sh builds it with clang's
// -fsanitize=fuzzer,address,undefined and runs it, bounded, from `make test`): the input is an encoded image, as a
// file or request body would be; it is decoded (format by signature, EXIF/XMP orientation) and preprocessed once in
// full and once shrunk on load, as der::load_and_preprocess does for a full and a draft card. An ImageError is
// the expected outcome for most inputs; anything else (a sanitizer report, another exception, a crash) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "der/error.hpp"
#include "der/image.hpp"

namespace {

// Small enough that the fuzzer spends its time on parsing, not on allocating bomb-sized bitmaps; the limit is
// checked from headers, before decoding, on the same code path as any other limit.
constexpr long long kMaxPixels = 1LL << 22;
const double kMean[3] = {0.485, 0.456, 0.406};
const double kStd[3] = {0.229, 0.224, 0.225};

void decode_and_preprocess(const std::uint8_t* data, std::size_t size, const der::DecodeOptions& options, int height,
                           int width, der::Interpolation interp) {
  try {
    const der::Bitmap bitmap = der::decode_memory(data, size, "fuzz-input", options);
    std::vector<float> out(static_cast<std::size_t>(3) * height * width);
    der::preprocess(bitmap.view(), height, width, interp, kMean, kStd, false, out.data());
  } catch (const der::ImageError&) {
    // refused with a reason: what a bad file must get
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  der::DecodeOptions full;
  full.max_pixels = kMaxPixels;
  decode_and_preprocess(data, size, full, 24, 32, der::Interpolation::Bilinear);
  der::DecodeOptions draft = full;  // a 1/2..1/8 DCT scale for most JPEGs of the corpus
  draft.draft_width = 8;
  draft.draft_height = 6;
  decode_and_preprocess(data, size, draft, 6, 8, der::Interpolation::Bicubic);
  return 0;
}
