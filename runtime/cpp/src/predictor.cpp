// der::Predictor: runtime/predictor.py + runtime/pipeline.py in C++ (ordered, pool-decoded batches).
#include "der/predictor.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <numeric>
#include <sys/stat.h>
#include <thread>

#include "der/paths.hpp"
#include "der/runner.hpp"
#include "der/sidecar.hpp"
#include "thread_pool.hpp"

#ifndef DER_VERSION
#define DER_VERSION "0.0.0"
#endif

namespace der {

const char* version() { return DER_VERSION; }

class Predictor::Pool : public ThreadPool {
 public:
  using ThreadPool::ThreadPool;
};

struct Predictor::Decoded {
  std::vector<float> data;               // ok.size() images, (3, H, W) each
  std::vector<std::size_t> ok;           // positions in the batch that decoded
  std::map<std::size_t, std::string> errors;  // position -> "<path>: <reason>"
};

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Python's sigmoid: 0.5 * (1 + tanh(0.5 x)) in double, then float32 (overflow-free, identical rounding).
float sigmoid(float x) { return static_cast<float>(0.5 * (1.0 + std::tanh(0.5 * static_cast<double>(x)))); }

const char* kInput = "images";

std::string shortest(double v) {  // 1.5 -> "1.5", as Python prints floats in messages
  char buf[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

std::vector<std::size_t> decide_indices(const float* probs, const std::vector<double>& card_thresholds,
                                        const Rule& rule) {
  const std::size_t c = card_thresholds.size();
  std::vector<std::size_t> order(c);
  std::iota(order.begin(), order.end(), 0);
  // sorted(range(c), key=lambda i: (-probs[i], i)): descending score, ties by class order.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return static_cast<double>(probs[a]) > static_cast<double>(probs[b]);
  });
  std::vector<std::size_t> keep;
  if (rule.top_k && !rule.threshold) {
    keep = order;
  } else {
    for (std::size_t i : order) {
      const double th = rule.threshold ? *rule.threshold : card_thresholds[i];
      if (static_cast<double>(probs[i]) >= th) keep.push_back(i);
    }
  }
  if (rule.top_k && keep.size() > static_cast<std::size_t>(*rule.top_k)) keep.resize(static_cast<std::size_t>(*rule.top_k));
  return keep;
}

Predictor::Predictor(const std::string& engine_path, const Options& options) : path_(engine_path), options_(options) {
  if (options_.batch_size < 1)
    throw Error("batch_size must be >= 1, got " + std::to_string(options_.batch_size));
  if (options_.max_pixels < 0)
    throw Error("max_pixels must be >= 0 (0: no limit), got " + std::to_string(options_.max_pixels));
  // As Python's read_card: a plan's sidecar is read (and validated) before any backend is asked for.
  if (engine_kind(path_) == "tensorrt" && options_.backend != "ort") read_sidecar(path_);
  runner_ = open_runner(path_, options_);
  runner_->activate();
  card_ = runner_->card();
  // _check_io of the Python Predictor: one input "images" (N, 3, H, W) and a "scores" or "logits" output.
  const auto inputs = runner_->inputs();
  const auto outputs = runner_->outputs();
  if (inputs.size() != 1 || inputs[0].name != kInput) {
    std::string names;
    for (const auto& i : inputs) names += (names.empty() ? "'" : ", '") + i.name + "'";
    throw EngineError(path_ + ": expected one input named 'images', found [" + names + "]; export the model with der-export");
  }
  const TensorInfo* out = nullptr;
  for (const char* want : {"scores", "logits"})
    for (const auto& o : outputs)
      if (!out && o.name == want) out = &o;
  if (!out) throw EngineError(path_ + ": no 'scores' or 'logits' output; export the model with der-export");
  output_name_ = out->name;
  const auto& s = inputs[0].shape;
  auto dim_ok = [](std::int64_t d, std::int64_t want) { return d <= 0 || d == want; };
  if (s.size() != 4 || !dim_ok(s[1], 3) || !dim_ok(s[2], card_.height) || !dim_ok(s[3], card_.width))
    throw EngineError(path_ + ": engine input shape does not match the card's (N, 3, " + std::to_string(card_.height) +
                      ", " + std::to_string(card_.width) + "); the card belongs to another export -- re-export the model");
  if (out->shape.size() != 2 || !dim_ok(out->shape[1], static_cast<std::int64_t>(card_.num_classes())))
    throw EngineError(path_ + ": engine class outputs do not match the card's " + std::to_string(card_.num_classes()) +
                      " classes; re-export the model");
  int workers = options_.decode_threads;
  if (workers < 0) workers = static_cast<int>(std::max(1u, std::min(4u, std::thread::hardware_concurrency())));
  options_.decode_threads = workers;
  if (workers > 0) pool_ = std::make_unique<Pool>(workers);
}

Predictor::~Predictor() {
  pool_.reset();  // join the decoders before the runner goes
  if (runner_) runner_->deactivate();
}

std::string Predictor::backend_name() const {
  const std::string& name = runner_->name();
  if (name.rfind("onnxrt:", 0) == 0) return "onnxruntime";
  return name.rfind("openvino:", 0) == 0 ? "openvino" : "tensorrt";
}

std::string Predictor::backend_description() const {
  const std::string detail = runner_->description();
  return detail.empty() ? backend_name() : detail;
}

void Predictor::check_rule(const Rule& rule) const {
  if (rule.threshold && !(std::isfinite(*rule.threshold) && *rule.threshold >= 0.0 && *rule.threshold <= 1.0))
    throw Error("threshold must be a probability in [0, 1], got " + shortest(*rule.threshold));
  if (rule.top_k && !(*rule.top_k >= 1 && static_cast<std::size_t>(*rule.top_k) <= card_.num_classes()))
    throw Error("top_k must be between 1 and the model's " + std::to_string(card_.num_classes()) + " classes, got " +
                std::to_string(*rule.top_k));
}

std::vector<std::string> Predictor::decide(const float* probs, const Rule& rule) const {
  std::vector<std::string> labels;
  for (std::size_t i : decide_indices(probs, card_.thresholds, rule)) labels.push_back(card_.classes[i]);
  return labels;
}

std::vector<float> Predictor::scores(const float* nchw, std::size_t n) const {
  if (n == 0) throw Error("cannot run inference on an empty batch");
  const std::size_t chw = 3 * static_cast<std::size_t>(card_.height) * static_cast<std::size_t>(card_.width);
  const std::size_t c = card_.num_classes();
  const std::size_t step = runner_->max_batch() ? runner_->max_batch() : n;
  const std::size_t lo = runner_->min_batch();
  std::vector<float> probs;
  probs.reserve(n * c);
  std::vector<float> padded;
  for (std::size_t s = 0; s < n; s += step) {
    const std::size_t rows = std::min(step, n - s);
    const float* chunk = nchw + s * chw;
    std::size_t run = rows;
    if (rows < lo) {  // a fixed batch dimension: pad with zeros, drop the padded rows
      padded.assign(lo * chw, 0.0f);
      std::copy(chunk, chunk + rows * chw, padded.begin());
      chunk = padded.data();
      run = lo;
    }
    std::vector<float> out = runner_->infer(chunk, run, output_name_);
    if (out.size() != run * c)
      throw EngineError(path_ + ": engine returned " + std::to_string(out.size()) + " values for " + std::to_string(run) +
                        " images of " + std::to_string(c) + " classes; re-export the model");
    probs.insert(probs.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(rows * c));
  }
  if (output_name_ == "logits")
    for (auto& v : probs) v = sigmoid(v);
  return probs;
}

Prediction Predictor::make_prediction(std::string path, const float* probs, const Rule& rule) const {
  Prediction p;
  p.path = std::move(path);
  p.labels = decide(probs, rule);
  for (std::size_t i = 0; i < card_.num_classes(); ++i) p.scores.emplace_back(card_.classes[i], probs[i]);
  return p;
}

Predictor::Decoded Predictor::decode_batch(const std::vector<std::string>& paths) const {
  Decoded d;
  const std::size_t chw = 3 * static_cast<std::size_t>(card_.height) * static_cast<std::size_t>(card_.width);
  d.data.resize(paths.size() * chw);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    try {
      struct stat st {};
      // Never open a FIFO, socket or device: reading one could block forever.
      if (::stat(paths[i].c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        throw ImageError(paths[i], "not a regular file (a " + file_kind(st.st_mode) + "); name an image file");
      // Per-thread reused decode/resize buffers (image.hpp): no large allocation per image.
      load_and_preprocess(paths[i], card_.height, card_.width, card_.interpolation, card_.mean.data(),
                          card_.std_dev.data(), card_.bgr(), d.data.data() + d.ok.size() * chw,
                          card_.decode_options(options_.max_pixels));
      d.ok.push_back(i);
    } catch (const ImageError& err) {
      d.errors[i] = err.what();
    }
  }
  d.data.resize(d.ok.size() * chw);
  return d;
}

void Predictor::predict_stream(const std::vector<std::string>& paths, const Rule& rule,
                               const std::function<bool(Prediction&&)>& sink, Stats* stats) const {
  check_rule(rule);
  Stats local;
  Stats& st = stats ? *stats : local;
  st = Stats{};
  st.workers = options_.decode_threads;
  st.batch_size = options_.batch_size;
  const double start = now();
  const std::size_t bs = static_cast<std::size_t>(options_.batch_size);
  const std::size_t nbatches = (paths.size() + bs - 1) / bs;
  const std::size_t prefetch = std::max<std::size_t>(2, 2 * static_cast<std::size_t>(options_.decode_threads));
  std::deque<std::future<Decoded>> pending;
  std::size_t next = 0;
  auto slice = [&](std::size_t b) {
    return std::vector<std::string>(paths.begin() + static_cast<std::ptrdiff_t>(b * bs),
                                    paths.begin() + static_cast<std::ptrdiff_t>(std::min(paths.size(), (b + 1) * bs)));
  };
  auto submit = [&] {
    auto chunk = slice(next++);
    if (pool_) {
      pending.push_back(pool_->submit([this, chunk = std::move(chunk)] { return decode_batch(chunk); }));
    } else {
      std::promise<Decoded> ready;
      ready.set_value(decode_batch(chunk));
      pending.push_back(ready.get_future());
    }
  };
  try {
    while (pool_ && next < nbatches && pending.size() < prefetch) submit();
    for (std::size_t b = 0; b < nbatches; ++b) {
      if (pending.empty()) submit();
      const double t0 = now();
      Decoded d = pending.front().get();
      pending.pop_front();
      if (pool_) st.wait_s += now() - t0;
      if (pool_ && next < nbatches) submit();  // the pool decodes ahead while the engine runs
      std::vector<float> probs;
      if (!d.ok.empty()) {
        const double t1 = now();
        probs = scores(d.data.data(), d.ok.size());
        st.engine_s += now() - t1;
      }
      st.images += d.ok.size();
      st.failed += d.errors.size();
      st.batches += 1;
      const std::size_t first = b * bs, count = std::min(bs, paths.size() - first);
      std::size_t row = 0;
      bool go_on = true;
      for (std::size_t pos = 0; pos < count && go_on; ++pos) {
        auto err = d.errors.find(pos);
        if (err != d.errors.end()) {
          Prediction p;
          p.path = paths[first + pos];
          p.error = err->second;
          go_on = sink(std::move(p));
        } else {
          go_on = sink(make_prediction(paths[first + pos], probs.data() + row * card_.num_classes(), rule));
          ++row;
        }
      }
      if (!go_on) break;
    }
  } catch (...) {
    for (auto& f : pending) f.wait();  // tasks only own copies, but finish them before unwinding the caller
    st.wall_s = now() - start;
    throw;
  }
  for (auto& f : pending) f.wait();
  st.wall_s = now() - start;
}

std::vector<Prediction> Predictor::predict(const std::vector<std::string>& paths, const Rule& rule) const {
  std::vector<Prediction> out;
  out.reserve(paths.size());
  predict_stream(paths, rule, [&](Prediction&& p) {
    out.push_back(std::move(p));
    return true;
  });
  return out;
}

Prediction Predictor::predict(const Image& image, const Rule& rule) const {
  check_rule(rule);
  if (!image.data || image.width <= 0 || image.height <= 0 || image.row_bytes() < static_cast<std::size_t>(image.width) * 3)
    throw Error("image must be RGB8 pixels with a positive width and height and a stride of at least 3 * width");
  std::vector<float> x(3 * static_cast<std::size_t>(card_.height) * static_cast<std::size_t>(card_.width));
  preprocess(image, card_.height, card_.width, card_.interpolation, card_.mean.data(), card_.std_dev.data(), card_.bgr(),
             x.data());
  std::vector<float> probs = scores(x.data(), 1);
  return make_prediction("", probs.data(), rule);
}

}  // namespace der
