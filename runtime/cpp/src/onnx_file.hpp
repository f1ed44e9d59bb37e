// What the ONNX Runtime and OpenVINO runners share: both run der-export's .onnx file, whose model card sits in
// metadata_props. The card is read straight from the protobuf's top level (der_deploy.artifact.files.onnx_metadata:
// the graph and weights are seeked over), so a corrupt file is one line before either runtime parses it, and
// OpenVINO can load a cached compiled model without reading the ONNX graph at all.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "der/card.hpp"
#include "der/runner.hpp"

namespace der {

// metadata_props of an ONNX file, without reading its graph. EngineError "not a valid ONNX model (...)" for a
// corrupt or truncated file or one without a graph, "cannot read (...)" when it cannot be opened.
std::map<std::string, std::string> onnx_metadata(const std::string& path);

// 16 hex digits that change with any byte of the file (a fast 64-bit hash of its whole content, not a
// cryptographic one): keys OpenVINO's compiled-model cache by content, as OpenVINO keys it by path, size and the
// modification time in seconds only. EngineError when the file cannot be read.
std::string content_fingerprint(const std::string& path);

// The card in metadata_props (card_from_metadata in Python): EngineError naming `path` when it is missing or bad.
Card card_from_metadata(const std::map<std::string, std::string>& props, const std::string& path);

// The parts of Runner that depend on the .onnx file only: its card, its I/O and the batch bounds they imply.
class OnnxFileRunner : public Runner {
 public:
  std::vector<TensorInfo> inputs() const override { return inputs_; }
  std::vector<TensorInfo> outputs() const override { return outputs_; }
  // A fixed batch dimension bounds both ends (callers pad the last chunk); a dynamic one is unbounded.
  std::size_t max_batch() const override;
  std::size_t min_batch() const override { return max_batch() ? max_batch() : 1; }
  Card card() const override { return card_; }

 protected:
  OnnxFileRunner(const std::string& prefix, std::string path) : Runner(prefix + path), path_(std::move(path)) {}

  // First step of activate_impl: the card from the file's metadata; clears the I/O of an earlier activation.
  void load_card();
  // The runtime's view of the graph's I/O; an input that is not float32 is an EngineError.
  void add_input(TensorInfo info, bool is_float32);
  void add_output(TensorInfo info) { outputs_.push_back(std::move(info)); }
  const std::string& input_name() const { return inputs_.at(0).name; }
  // Floats in one (3, H, W) image of the card.
  std::size_t image_floats() const {
    return 3 * static_cast<std::size_t>(card_.height) * static_cast<std::size_t>(card_.width);
  }

  std::string path_;
  Card card_;

 private:
  std::vector<TensorInfo> inputs_, outputs_;
};

}  // namespace der
