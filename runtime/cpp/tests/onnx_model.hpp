// Writes a tiny DER-shaped ONNX model for the GoogleTest tests (no Python, no onnx library): protobuf encoded
// by hand. Graph: images (N, 3, H, W) -> GlobalAveragePool -> Flatten -> Gemm(W, B) -> "logits"
// [-> Sigmoid -> "scores"], with the model card in metadata_props["der_deploy.card"].
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace dertest {

class Proto {
 public:
  Proto& varint(int field, std::uint64_t v) { key(field, 0); raw_varint(v); return *this; }
  Proto& bytes(int field, const std::string& s) { key(field, 2); raw_varint(s.size()); buf_ += s; return *this; }
  Proto& msg(int field, const Proto& m) { return bytes(field, m.buf_); }
  const std::string& str() const { return buf_; }

 private:
  void key(int field, int wire) { raw_varint((static_cast<std::uint64_t>(field) << 3) | static_cast<unsigned>(wire)); }
  void raw_varint(std::uint64_t v) {
    while (v >= 0x80) { buf_ += static_cast<char>((v & 0x7F) | 0x80); v >>= 7; }
    buf_ += static_cast<char>(v);
  }
  std::string buf_;
};

inline Proto tensor_type(const std::vector<std::int64_t>& dims) {  // dim < 0: symbolic "N"
  Proto shape;
  for (auto d : dims) shape.msg(1, d < 0 ? Proto().bytes(2, "N") : Proto().varint(1, static_cast<std::uint64_t>(d)));
  return Proto().msg(1, Proto().varint(1, 1).msg(2, shape));  // TypeProto.tensor_type{elem_type FLOAT, shape}
}

inline Proto value_info(const std::string& name, const std::vector<std::int64_t>& dims) {
  return Proto().bytes(1, name).msg(2, tensor_type(dims));
}

inline Proto initializer(const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<float>& v) {
  Proto t;
  for (auto d : dims) t.varint(1, static_cast<std::uint64_t>(d));
  t.varint(2, 1).bytes(8, name);
  std::string raw(v.size() * 4, '\0');
  std::memcpy(&raw[0], v.data(), raw.size());
  return t.bytes(9, raw);
}

inline Proto node(const std::string& op, const std::vector<std::string>& in, const std::string& out,
                  const Proto* attr = nullptr) {
  Proto n;
  for (const auto& i : in) n.bytes(1, i);
  n.bytes(2, out).bytes(3, op + "_" + out).bytes(4, op);
  if (attr) n.msg(5, *attr);
  return n;
}

struct TinyModel {
  int classes = 4, height = 8, width = 8;
  std::int64_t batch = -1;                 // fixed batch dimension when > 0
  bool scores = true;                      // Sigmoid inside (output "scores") or raw "logits"
  std::vector<float> weight, bias;         // (3, C) and (C)
  std::string card;                        // metadata card JSON ("" for none)

  // logits[c] = sum_k mean_k * W[k][c] + B[c], mean_k the plane mean of channel k.
  void write(const std::string& path) const {
    const std::vector<std::int64_t> in{batch, 3, height, width};
    Proto flat_axis = Proto().bytes(1, "axis").varint(3, 1).varint(20, 2);
    Proto graph;
    graph.msg(1, node("GlobalAveragePool", {"images"}, "pooled"))
        .msg(1, node("Flatten", {"pooled"}, "flat", &flat_axis))
        .msg(1, node("Gemm", {"flat", "W", "B"}, "logits"));
    if (scores) graph.msg(1, node("Sigmoid", {"logits"}, "scores"));
    graph.bytes(2, "tiny_der")
        .msg(5, initializer("W", {3, classes}, weight))
        .msg(5, initializer("B", {classes}, bias))
        .msg(11, value_info("images", in))
        .msg(12, value_info(scores ? "scores" : "logits", {batch, classes}));
    Proto model;
    model.varint(1, 8).bytes(2, "der-tests").msg(7, graph).msg(8, Proto().bytes(1, "").varint(2, 13));
    if (!card.empty()) model.msg(14, Proto().bytes(1, "der_deploy.card").bytes(2, card));
    std::ofstream(path, std::ios::binary) << model.str();
  }
};

// A card for a TinyModel: classes c0..c{C-1}, input_size (H, W), bilinear.
inline std::string tiny_card(int classes, int h, int w, const std::string& extra = "") {
  std::string names, th;
  for (int i = 0; i < classes; ++i) {
    names += (i ? ", \"c" : "\"c") + std::to_string(i) + "\"";
    th += (i ? ", " : "") + std::string(i % 2 ? "0.4" : "0.6");
  }
  return "{\"classes\": [" + names + "], \"arch\": \"tiny\", \"input_size\": [" + std::to_string(h) + ", " +
         std::to_string(w) + "], \"interpolation\": \"bilinear\", \"thresholds\": [" + th + "]" + extra +
         ", \"format_version\": 1}";
}

}  // namespace dertest
