// The TensorRT runner's logic without TensorRT or CUDA (see trt_logic.hpp); always compiled, tested on any machine.
#include "trt_logic.hpp"

#include <array>
#include <cctype>
#include <cstring>
#include <limits>

#include "der/error.hpp"

namespace der {

namespace trt {
namespace {

std::string dims_text(const Shape& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// --- SHA-256, FIPS 180-4 section 6.2 ---------------------------------------------------------------------------
constexpr std::array<std::uint32_t, 64> kRound = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void compress(std::array<std::uint32_t, 8>& h, const unsigned char* block) {
  std::uint32_t w[64];
  for (int t = 0; t < 16; ++t)
    w[t] = std::uint32_t(block[4 * t]) << 24 | std::uint32_t(block[4 * t + 1]) << 16 |
           std::uint32_t(block[4 * t + 2]) << 8 | std::uint32_t(block[4 * t + 3]);
  for (int t = 16; t < 64; ++t) {
    const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int t = 0; t < 64; ++t) {
    const std::uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[t] + w[t];
    const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

}  // namespace

Shape input_shape(const Shape& engine, const Shape& profile_min, const Shape& profile_max, std::int64_t batch,
                  const std::string& tensor, const std::string& plan) {
  if (engine.empty() || profile_min.size() != engine.size() || profile_max.size() != engine.size())
    throw EngineError(plan + ": input '" + tensor + "' has shape " + dims_text(engine) + " but its profile is " +
                      dims_text(profile_min) + ".." + dims_text(profile_max) + "; rebuild it with der-export --trt");
  if (batch < profile_min[0] || batch > profile_max[0])
    throw EngineError(plan + ": batch " + std::to_string(batch) + " is outside the profile of '" + tensor + "' (" +
                      std::to_string(profile_min[0]) + ".." + std::to_string(profile_max[0]) + ")");
  Shape out = engine;
  out[0] = batch;
  for (std::size_t d = 1; d < out.size(); ++d)
    if (out[d] < 0) out[d] = profile_max[d];
  return out;
}

std::size_t elements(const Shape& shape, const std::string& tensor, const std::string& plan) {
  std::size_t n = 1;
  for (const std::int64_t d : shape) {
    if (d < 0)
      throw EngineError(plan + ": cannot size '" + tensor + "' (shape " + dims_text(shape) +
                        " after setting the inputs); rebuild it with der-export --trt");
    const auto u = static_cast<std::size_t>(d);
    if (u != 0 && n > std::numeric_limits<std::size_t>::max() / u)
      throw EngineError(plan + ": tensor '" + tensor + "' of shape " + dims_text(shape) + " is too large");
    n *= u;
  }
  return n;
}

std::size_t output_elements(const Shape& shape, std::int64_t batch, const std::string& tensor,
                            const std::string& plan) {
  const std::size_t n = elements(shape, tensor, plan);
  if (shape.empty() || shape[0] != batch)
    throw EngineError(base_name(plan) + ": unexpected output shape " + dims_text(shape) + " for '" + tensor +
                      "' at batch " + std::to_string(batch));
  return n;
}

std::string library_version(const std::string& recorded, const LibVersion& lib) {
  const std::string three =
      std::to_string(lib.major) + "." + std::to_string(lib.minor) + "." + std::to_string(lib.patch);
  return recorded == three ? three : three + "." + std::to_string(lib.build);
}

std::string sha256_hex(const void* data, std::size_t size) {
  std::array<std::uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t full = size / 64;
  for (std::size_t i = 0; i < full; ++i) compress(h, p + 64 * i);
  // Padding: 0x80, zeros, then the message length in bits, big-endian, to a multiple of 64 bytes.
  unsigned char tail[128] = {};
  const std::size_t rest = size - 64 * full;
  if (rest) std::memcpy(tail, p + 64 * full, rest);
  tail[rest] = 0x80;
  const std::size_t tail_len = rest < 56 ? 64 : 128;
  const std::uint64_t bits = static_cast<std::uint64_t>(size) * 8;
  for (int i = 0; i < 8; ++i) tail[tail_len - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  for (std::size_t off = 0; off < tail_len; off += 64) compress(h, tail + off);
  static const char* const hex = "0123456789abcdef";
  std::string out;
  for (const std::uint32_t word : h)
    for (int shift = 28; shift >= 0; shift -= 4) out += hex[(word >> shift) & 0xf];
  return out;
}

void check_plan_hash(const Sidecar& sidecar, const std::vector<char>& plan, const std::string& plan_path) {
  if (sidecar.plan_sha256.empty()) return;  // sidecars written before plan hashes (plan_sha256 null)
  if (sha256_hex(plan.data(), plan.size()) != sidecar.plan_sha256)
    throw EngineError(plan_path + " does not match its sidecar (SHA-256 differs); the plan was replaced or corrupted "
                      "-- rebuild both with der-export --trt");
}

int check_device(int device, int count) {
  if (device < 0)
    throw EngineError("CUDA device " + std::to_string(device) + " is not a device index; give 0 or more");
  if (device >= count)
    throw BackendUnavailable("CUDA device " + std::to_string(device) + " is not available (this machine has " +
                             std::to_string(count) + " usable CUDA device" + (count == 1 ? "" : "s") +
                             "); pick another device, or check the GPU and driver with der-doctor");
  return device;
}

std::size_t find_output(const std::vector<TensorInfo>& outputs, const std::string& name, const std::string& plan) {
  for (std::size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].name == name) return i;
  throw EngineError(plan + " has no output '" + name + "'; rebuild it with der-export --trt");
}

void LogCapture::log(int severity, const char* msg) {
  if (severity > kWarning || !msg) return;
  std::string text(msg);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  text.erase(0, text.find_first_not_of(" \t\r\n"));
  std::lock_guard<std::mutex> lock(mutex_);
  auto& list = severity == kWarning ? warnings_ : errors_;
  if (list.size() >= 64) list.erase(list.begin());  // only the last few are ever quoted
  list.push_back(std::move(text));
}

void LogCapture::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  errors_.clear();
  warnings_.clear();
}

std::string LogCapture::summary() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto& list = errors_.empty() ? warnings_ : errors_;
  const std::size_t keep = errors_.empty() ? 3 : 5;
  std::string out;
  for (std::size_t i = list.size() > keep ? list.size() - keep : 0; i < list.size(); ++i)
    out += (out.empty() ? "" : " | ") + list[i];
  for (char& ch : out)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return out.empty() ? "TensorRT reported no error" : out;
}

bool LogCapture::driver_too_old() const {
  // Python's \berror:?\s*35\b on the summary.
  const std::string s = summary();
  for (std::size_t at = s.find("error"); at != std::string::npos; at = s.find("error", at + 1)) {
    if (at > 0 && (std::isalnum(static_cast<unsigned char>(s[at - 1])) || s[at - 1] == '_')) continue;
    std::size_t i = at + 5;
    if (i < s.size() && s[i] == ':') ++i;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (s.compare(i, 2, "35") == 0 &&
        (i + 2 == s.size() || !(std::isalnum(static_cast<unsigned char>(s[i + 2])) || s[i + 2] == '_')))
      return true;
  }
  return false;
}

}  // namespace trt
}  // namespace der
