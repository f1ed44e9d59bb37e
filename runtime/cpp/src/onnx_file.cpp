// onnx_metadata and OnnxFileRunner (onnx_file.hpp).
#include "onnx_file.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <sys/stat.h>
#include <vector>

namespace der {
namespace {

// ModelProto's top-level fields this reader looks at (onnx.proto).
constexpr std::uint64_t kIrVersion = 1, kGraph = 7, kMetadataProps = 14;

struct Corrupt : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads the protobuf wire format from a FILE*, seeking over the fields it does not want.
class Reader {
 public:
  Reader(std::FILE* f, long long size) : f_(f), size_(size) {}

  bool at_end() const { return pos_ >= size_; }

  std::uint64_t varint() {
    std::uint64_t result = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      const int byte = std::fgetc(f_);
      if (byte == EOF) throw Corrupt("truncated");
      ++pos_;
      result |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return result;
    }
    throw Corrupt("varint too long");
  }

  std::uint64_t length() {
    const std::uint64_t n = varint();
    if (n > static_cast<std::uint64_t>(size_ - pos_)) throw Corrupt("length past end of file");
    return n;
  }

  void skip(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(size_ - pos_) || std::fseek(f_, static_cast<long>(n), SEEK_CUR) != 0)
      throw Corrupt("truncated");
    pos_ += static_cast<long long>(n);
  }

  std::string bytes(std::uint64_t n) {
    std::string out(n, '\0');
    if (n && std::fread(&out[0], 1, n, f_) != n) throw Corrupt("truncated");
    pos_ += static_cast<long long>(n);
    return out;
  }

 private:
  std::FILE* f_;
  long long size_;
  long long pos_ = 0;
};

// One StringStringEntryProto: key = 1, value = 2, both strings.
std::pair<std::string, std::string> entry(const std::string& data) {
  std::string kv[3];
  std::size_t i = 0;
  auto varint = [&]() {
    std::uint64_t v = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (i >= data.size()) throw Corrupt("truncated entry");
      const auto byte = static_cast<unsigned char>(data[i++]);
      v |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return v;
    }
    throw Corrupt("varint too long");
  };
  while (i < data.size()) {
    const std::uint64_t tag = varint();
    if ((tag & 7) != 2) throw Corrupt("bad metadata entry");
    const std::uint64_t n = varint();
    if (n > data.size() - i) throw Corrupt("bad metadata entry");
    if ((tag >> 3) == 1 || (tag >> 3) == 2) kv[tag >> 3] = data.substr(i, n);
    i += n;
  }
  return {kv[1], kv[2]};
}

}  // namespace

std::map<std::string, std::string> onnx_metadata(const std::string& path) {
  struct stat st {};
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f || ::fstat(fileno(f.get()), &st) != 0)
    throw EngineError(path + ": cannot read (" + std::strerror(errno) + ")");
  std::map<std::string, std::string> props;
  bool ir_version = false, graph = false;
  try {
    Reader r(f.get(), static_cast<long long>(st.st_size));
    while (!r.at_end()) {
      const std::uint64_t tag = r.varint(), field = tag >> 3;
      if (field == 0) throw Corrupt("field number 0");
      ir_version = ir_version || field == kIrVersion;
      graph = graph || field == kGraph;
      switch (tag & 7) {
        case 0: r.varint(); break;
        case 1: r.skip(8); break;
        case 5: r.skip(4); break;
        case 2: {
          const std::uint64_t n = r.length();
          if (field == kMetadataProps) props.insert(entry(r.bytes(n)));
          else r.skip(n);  // the graph and its weights: never read
          break;
        }
        default: throw Corrupt("wire type");
      }
    }
  } catch (const Corrupt&) {
    throw EngineError(path + ": not a valid ONNX model (corrupt or truncated); re-export it with der-export");
  }
  if (!ir_version || !graph)
    throw EngineError(path + ": not a valid ONNX model (no graph); re-export it with der-export");
  return props;
}

std::string content_fingerprint(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw EngineError(path + ": cannot read (" + std::strerror(errno) + ")");
  // Four independent multiply-rotate lanes over 8-byte words (memory-bound, ~1 GB/s here); the tail and the length
  // go into the final mix.
  constexpr std::uint64_t kMul1 = 0x9E3779B185EBCA87ull, kMul2 = 0xC2B2AE3D27D4EB4Full;
  auto rotl = [](std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
  std::uint64_t lane[4] = {kMul1, kMul2, ~kMul1, ~kMul2}, length = 0, tail = 0;
  std::vector<unsigned char> buf(std::size_t(1) << 20);
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32)
      for (int k = 0; k < 4; ++k) {
        std::uint64_t w;
        std::memcpy(&w, &buf[i + 8 * static_cast<std::size_t>(k)], 8);
        lane[k] = rotl(lane[k] + w * kMul2, 31) * kMul1;
      }
    for (; i < n; ++i) tail = (tail ^ buf[i]) * 0x100000001B3ull;  // only the file's last block has a tail
    length += n;
  }
  if (std::ferror(f.get())) throw EngineError(path + ": cannot read (" + std::strerror(errno) + ")");
  std::uint64_t h = length * kMul1 ^ tail;
  for (const std::uint64_t l : lane) h = rotl(h ^ (l * kMul2), 27) * kMul1 + 0x85EBCA77C2B2AE63ull;
  h ^= h >> 33;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

Card card_from_metadata(const std::map<std::string, std::string>& props, const std::string& path) {
  const auto it = props.find(kOnnxCardKey);
  if (it == props.end()) throw EngineError(path + " has no der-deploy model card; export it with der-export");
  try {
    return Card::from_json(it->second);
  } catch (const CardError& err) {
    throw EngineError(path + ": bad model card (" + err.what() + "); re-export it with der-export");
  }
}

std::size_t OnnxFileRunner::max_batch() const {
  return !inputs_.empty() && !inputs_[0].shape.empty() && inputs_[0].shape[0] > 0
             ? static_cast<std::size_t>(inputs_[0].shape[0]) : 0;
}

void OnnxFileRunner::load_card() {
  inputs_.clear();
  outputs_.clear();
  card_ = card_from_metadata(onnx_metadata(path_), path_);
}

void OnnxFileRunner::add_input(TensorInfo info, bool is_float32) {
  if (!is_float32)
    throw EngineError(path_ + ": input '" + info.name + "' is not a float32 tensor; export the model with der-export");
  inputs_.push_back(std::move(info));
}

}  // namespace der
