// The model card: ordered classes plus the preprocessing and decision rules that belong to the weights.
// Parsed and validated exactly like der_deploy/card.py ModelCard.from_json + validate; a card this SDK cannot
// honour (unknown field or interpolation, a format_version from the future) is refused with CardError.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "der/export.h"
#include "der/image.hpp"

namespace der {

constexpr int kCardFormatVersion = 1;
constexpr const char* kOnnxCardKey = "der_deploy.card";  // ONNX metadata_props key

struct DER_API Card {
  std::vector<std::string> classes;
  std::string arch = "resnet101";
  int height = 448;  // input_size is (H, W)
  int width = 448;
  Interpolation interpolation = Interpolation::Bilinear;
  std::array<double, 3> mean{0.485, 0.456, 0.406};  // RGB order, always
  std::array<double, 3> std_dev{0.229, 0.224, 0.225};  // the card's "std"
  std::string channel_order = "RGB";  // "RGB" or "BGR": BGR only reverses the output channels
  std::vector<double> thresholds;     // one per class
  int format_version = kCardFormatVersion;
  std::string provenance_json = "{}";  // kept as JSON text; the SDK does not interpret it
  std::string decode = "full";         // "full" or "draft": JPEGs shrunk on load to cover (height, width)

  std::size_t num_classes() const { return classes.size(); }
  bool bgr() const { return channel_order == "BGR"; }
  // How to decode images for this card: the draft target when decode is "draft", and `max_pixels` (0: none).
  DecodeOptions decode_options(long long max_pixels = 0) const;

  // Parse the card's JSON text; CardError for invalid JSON or any rule ModelCard.validate enforces.
  static Card from_json(const std::string& text);
  // Card JSON (same field names and order as ModelCard.to_json).
  std::string to_json() const;
};

}  // namespace der
