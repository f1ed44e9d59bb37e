// The OpenVINO backend (compiled only with DER_WITH_OPENVINO) on the hand-written ONNX model: scores against an
// independent computation, the precision read back from the compiled model, bf16/fp16 refused in one line on a
// CPU without them natively (OpenVINO itself is asked which branch applies), option errors, threads, the C ABI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>
#include <vector>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openvino/openvino.hpp>

#include "der/der.h"
#include "der/predictor.hpp"
#include "der/runner.hpp"
#include "tiny_suite.hpp"

namespace {

constexpr int C = 4, H = 8, W = 8;

// Whether OpenVINO's CPU plugin reports `capability` ("BF16", "FP16") here: decides which branch a test asserts.
bool cpu_has(const char* capability) {
  const auto caps = ov::Core().get_property("CPU", ov::device::capabilities);
  return std::find(caps.begin(), caps.end(), capability) != caps.end();
}

class OvRunner : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/der-ov-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    model_ = dertest::standard_model();
    dertest::write_variants(model_, dir_);
  }
  static void TearDownTestSuite() { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  static der::Options ov(const std::string& precision = "", const std::string& mode = "latency") {
    der::Options o;
    o.backend = "openvino";
    o.precision = precision;
    o.mode = mode;
    return o;
  }

  static std::vector<double> reference(const float* chw) { return dertest::reference(model_, chw); }

  static std::vector<float> random_batch(std::size_t n, unsigned seed) {
    return dertest::random_batch(model_, n, seed);
  }

  static void expect_near_reference(const der::Predictor& p, double tol, unsigned seed) {
    const std::size_t n = 5;
    const auto x = random_batch(n, seed);
    const auto probs = p.scores(x.data(), n);
    ASSERT_EQ(probs.size(), n * C);
    for (std::size_t i = 0; i < n; ++i) {
      const auto ref = reference(x.data() + i * 3 * H * W);
      for (int c = 0; c < C; ++c) EXPECT_NEAR(probs[i * C + c], ref[c], tol) << "image " << i << " class " << c;
    }
  }

  static std::string error_of(const std::string& path, const der::Options& o) {
    try {
      der::Predictor p(path, o);
    } catch (const der::Error& e) {
      return e.what();
    }
    return "";
  }

  static std::string dir_;
  static dertest::TinyModel model_;
};
std::string OvRunner::dir_;
dertest::TinyModel OvRunner::model_;

TEST_F(OvRunner, IsBuiltIn) { EXPECT_TRUE(der::has_openvino()); }

TEST_F(OvRunner, Fp32ScoresMatchAnIndependentComputationAndSayWhatRan) {
  for (const char* precision : {"", "fp32"}) {
    der::Predictor p(dir_ + "/scores.onnx", ov(precision));
    EXPECT_EQ(p.card().classes, (std::vector<std::string>{"c0", "c1", "c2", "c3"}));  // card from metadata_props
    EXPECT_EQ(p.card().thresholds, (std::vector<double>{0.6, 0.4, 0.6, 0.4}));
    EXPECT_EQ(p.backend_name(), "openvino");
    const std::string what = p.backend_description();
    EXPECT_EQ(what.rfind("OpenVINO ", 0), 0u) << what;
    EXPECT_NE(what.find(" CPU fp32, latency, 1 request"), std::string::npos) << what;
    expect_near_reference(p, 1e-6, 1);
  }
}

TEST_F(OvRunner, AgreesWithOnnxRuntimeOnTheSameFile) {
  der::Predictor ort(dir_ + "/scores.onnx"), ov_(dir_ + "/scores.onnx", ov());
  EXPECT_EQ(ort.backend_description(), "onnxruntime");
  const auto x = random_batch(9, 2);
  const auto a = ort.scores(x.data(), 9), b = ov_.scores(x.data(), 9);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << i;
}

TEST_F(OvRunner, LogitsAndAFixedBatchDimension) {
  der::Predictor scores(dir_ + "/scores.onnx", ov()), logits(dir_ + "/logits.onnx", ov()),
      fixed(dir_ + "/fixed.onnx", ov());
  const auto x = random_batch(5, 3);  // fixed: 2 + 2 + 1 (padded to 2)
  const auto a = scores.scores(x.data(), 5), b = logits.scores(x.data(), 5), f = fixed.scores(x.data(), 5);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-6) << i;
    EXPECT_EQ(a[i], f[i]) << i;
  }
}

// Never a silent FP32 run: on a CPU without native BF16/FP16 the request is refused in one line naming the
// precision; on one with it (AMX, AVX512_BF16 / _FP16) the compiled model confirms it and the scores stay close.
TEST_F(OvRunner, ReducedPrecisionIsNativeOrRefusedInOneLine) {
  for (const auto& [precision, capability] : {std::pair<std::string, const char*>{"bf16", "BF16"}, {"fp16", "FP16"}}) {
    SCOPED_TRACE(precision);
    if (cpu_has(capability)) {
      der::Predictor p(dir_ + "/scores.onnx", ov(precision));
      const std::string what = p.backend_description();
      EXPECT_NE(what.find(" " + precision + ", latency, "), std::string::npos) << what;
      expect_near_reference(p, 2e-2, 4);
    } else {
      try {
        der::Predictor p(dir_ + "/scores.onnx", ov(precision));
        ADD_FAILURE() << precision << " ran on a CPU without it: " << p.backend_description();
      } catch (const der::BackendUnavailable& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        EXPECT_EQ(what.rfind(dir_ + "/scores.onnx: this CPU has no native " + precision + " (", 0), 0u) << what;
        EXPECT_NE(what.find("use --precision fp32"), std::string::npos) << what;
      }
    }
  }
}

TEST_F(OvRunner, OptionErrors) {
  const std::string model = dir_ + "/scores.onnx";
  EXPECT_EQ(error_of(model, ov("int8")), "unknown precision 'int8'; use fp32, bf16 or fp16 (with --backend openvino)");
  EXPECT_EQ(error_of(model, ov("FP32")).rfind("unknown precision 'FP32'", 0), 0u);
  der::Options ort;
  ort.precision = "bf16";
  EXPECT_EQ(error_of(model, ort).rfind("--precision bf16 applies to --backend openvino only", 0), 0u);
  auto providers = ov();
  providers.providers = {"cuda", "cpu"};
  EXPECT_NE(error_of(model, providers).find("--providers applies to ONNX Runtime only"), std::string::npos);
  EXPECT_EQ(error_of(model, ov("", "fast")),
            "unknown OpenVINO mode 'fast'; use latency or throughput (with --backend openvino)");
  auto gpu = ov();
  gpu.device = 1;
  EXPECT_NE(error_of(model, gpu).find("--device applies to GPUs"), std::string::npos);
  auto bad_backend = ov();
  bad_backend.backend = "openvno";
  EXPECT_EQ(error_of(model, bad_backend), "unknown backend 'openvno'; use one of auto, ort, trt, openvino");
}

// Throughput: PERFORMANCE_HINT THROUGHPUT read back, OpenVINO's optimal number of requests, each batch split over
// them; the scores are those of latency mode, row for row, whatever the split.
TEST_F(OvRunner, ThroughputModeSplitsBatchesAndGivesTheLatencyScores) {
  der::Predictor latency(dir_ + "/scores.onnx", ov()), throughput(dir_ + "/scores.onnx", ov("", "throughput"));
  const std::string what = throughput.backend_description();
  EXPECT_NE(what.find(" CPU fp32, throughput, "), std::string::npos) << what;
  ov::Core core;
  const auto optimal = core.compile_model(dir_ + "/scores.onnx", "CPU",
                                          ov::hint::performance_mode(ov::hint::PerformanceMode::THROUGHPUT))
                           .get_property(ov::optimal_number_of_infer_requests);
  EXPECT_NE(what.find(", " + std::to_string(optimal) + (optimal == 1 ? " request" : " requests")), std::string::npos)
      << what;
  for (std::size_t n : {1u, 2u, 5u, 11u}) {
    const auto x = random_batch(n, 10 + static_cast<unsigned>(n));
    const auto a = latency.scores(x.data(), n), b = throughput.scores(x.data(), n);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << "n " << n << " value " << i;
  }
  expect_near_reference(throughput, 1e-6, 12);
  der::Predictor fixed(dir_ + "/fixed.onnx", ov("", "throughput"));  // a fixed batch of 2 is never split
  const auto x = random_batch(5, 13);
  const auto a = latency.scores(x.data(), 5), f = fixed.scores(x.data(), 5);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], f[i], 1e-6) << i;
}

TEST_F(OvRunner, CacheDirIsFilledOnceAndThenLoadedWithTheSameScores) {
  const std::string cache = dir_ + "/cache/nested";  // created, parents too
  auto o = ov();
  o.cache_dir = cache;
  const auto x = random_batch(7, 14);
  der::Predictor first(dir_ + "/scores.onnx", o);
  EXPECT_EQ(first.backend_description().find(", cached"), std::string::npos) << first.backend_description();
  std::size_t files = 0;  // OpenVINO's blobs, in one subfolder named by the file's content
  for (const auto& entry : std::filesystem::recursive_directory_iterator(cache))
    if (entry.is_regular_file()) {
      ++files;
      EXPECT_EQ(entry.path().parent_path().filename().string().rfind("onnx-", 0), 0u) << entry.path();
    }
  EXPECT_GE(files, 1u) << "nothing written to " << cache;
  der::Predictor second(dir_ + "/scores.onnx", o);
  const std::string what = second.backend_description();
  EXPECT_EQ(what.substr(what.size() - 8), ", cached") << what;
  EXPECT_EQ(first.scores(x.data(), 7), second.scores(x.data(), 7));
  // A card is still read from the file on a cache hit: the cached model answers with the right classes.
  EXPECT_EQ(second.card().classes, first.card().classes);
  // A re-export to the same path, same size, within the same second is compiled afresh, never served from the
  // old blob (OpenVINO alone would: it checks path, size and mtime in seconds).
  const std::string moved = dir_ + "/reexported.onnx";
  model_.write(moved);
  der::Predictor before(moved, o);
  auto changed = model_;
  changed.bias = {2.0f, -2.0f, 1.0f, 0.0f};
  changed.write(moved);
  der::Predictor after(moved, o);
  EXPECT_EQ(after.backend_description().find(", cached"), std::string::npos) << after.backend_description();
  const auto probs = after.scores(x.data(), 1);
  const auto want = dertest::reference(changed, x.data());
  for (std::size_t c = 0; c < want.size(); ++c) EXPECT_NEAR(probs[c], want[c], 1e-6) << c;
  std::ofstream(dir_ + "/cache-file") << "a file, not a folder";
  o.cache_dir = dir_ + "/cache-file";
  const std::string err = error_of(dir_ + "/scores.onnx", o);
  EXPECT_EQ(err.rfind(dir_ + "/cache-file: cannot create the OpenVINO cache folder (", 0), 0u) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
}

TEST_F(OvRunner, EngineErrorsNameTheFileAndTheFix) {
  EXPECT_EQ(error_of(dir_ + "/nocard.onnx", ov()),
            dir_ + "/nocard.onnx has no der-deploy model card; export it with der-export");
  // Refused from the metadata, before OpenVINO probes its frontends (which print to stderr): as on ONNX Runtime.
  EXPECT_EQ(error_of(dir_ + "/garbage.onnx", ov()),
            dir_ + "/garbage.onnx: not a valid ONNX model (corrupt or truncated); re-export it with der-export");
  EXPECT_THROW(der::Predictor(dir_ + "/garbage.onnx", ov()), der::EngineError);
}

TEST_F(OvRunner, OnePredictorSharedByThreadsGivesTheSequentialResults) {
  der::Predictor p(dir_ + "/scores.onnx", ov());
  const auto small = random_batch(3, 5), large = random_batch(11, 6);
  const auto want_small = p.scores(small.data(), 3), want_large = p.scores(large.data(), 11);
  constexpr int kThreads = 6, kRounds = 25;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        if ((t + r) % 2 ? p.scores(small.data(), 3) != want_small : p.scores(large.data(), 11) != want_large)
          ++mismatches[t];
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST_F(OvRunner, CAbiTakesBackendPrecisionModeAndCacheDir) {
  const std::string model = dir_ + "/scores.onnx";
  der_predictor* h = nullptr;
  ASSERT_EQ(der_create(model.c_str(), R"({"backend": "openvino", "precision": "fp32"})", &h), DER_OK)
      << der_last_error(nullptr);
  const auto x = random_batch(2, 7);
  std::vector<float> out(2 * C);
  ASSERT_EQ(der_scores(h, x.data(), 2, out.data(), out.size()), DER_OK) << der_last_error(h);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto ref = reference(x.data() + i * 3 * H * W);
    for (int c = 0; c < C; ++c) EXPECT_NEAR(out[i * C + c], ref[c], 1e-6);
  }
  der_destroy(h);
  h = nullptr;
  EXPECT_EQ(der_create(model.c_str(), R"({"backend": "openvino", "precision": "int4"})", &h), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)).rfind("unknown precision 'int4'", 0), 0u);
  if (!cpu_has("BF16")) {
    EXPECT_EQ(der_create(model.c_str(), R"({"backend": "openvino", "precision": "bf16"})", &h), DER_ERROR_BACKEND);
    EXPECT_EQ(std::string(der_last_error(nullptr)).rfind(model + ": this CPU has no native bf16", 0), 0u);
  }
  EXPECT_EQ(h, nullptr);
  const std::string cache = dir_ + "/c-abi-cache";
  const std::string json = R"({"backend": "openvino", "mode": "throughput", "cache_dir": ")" + cache + R"("})";
  ASSERT_EQ(der_create(model.c_str(), json.c_str(), &h), DER_OK) << der_last_error(nullptr);
  std::vector<float> again(2 * C);
  ASSERT_EQ(der_scores(h, x.data(), 2, again.data(), again.size()), DER_OK) << der_last_error(h);
  for (std::size_t i = 0; i < again.size(); ++i) EXPECT_NEAR(again[i], out[i], 1e-6);
  der_destroy(h);
  h = nullptr;
  EXPECT_TRUE(std::filesystem::is_directory(cache));
  EXPECT_EQ(der_create(model.c_str(), R"({"backend": "openvino", "mode": "batch"})", &h), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)).rfind("unknown OpenVINO mode 'batch'", 0), 0u);
}

// OpenVINO predictors ending first-in-first-out leave this thread's alternate signal stack alive: they share one
// Core (src/ov_runner.cpp, shared_core), where one Core each left it on a freed stack and the next SA_ONSTACK signal
// killed the process (tests/backends/test_openvino_core.py shows that with OpenVINO's Python API).
TEST_F(OvRunner, PredictorsEndingInAnyOrderLeaveALiveSignalStack) {
  auto first = std::make_unique<der::Predictor>(dir_ + "/scores.onnx", ov());
  auto second = std::make_unique<der::Predictor>(dir_ + "/scores.onnx", ov());
  first.reset();
  second.reset();
  stack_t ss{};
  ASSERT_EQ(sigaltstack(nullptr, &ss), 0);
  if (!(ss.ss_flags & SS_DISABLE)) {
    const auto begin = reinterpret_cast<std::uintptr_t>(ss.ss_sp) & ~std::uintptr_t{4095};
    const auto end = reinterpret_cast<std::uintptr_t>(ss.ss_sp) + ss.ss_size;
    std::vector<unsigned char> pages((end - begin + 4095) / 4096);
    ASSERT_EQ(mincore(reinterpret_cast<void*>(begin), end - begin, pages.data()), 0)
        << "the alternate signal stack at " << ss.ss_sp << " is unmapped";
  }
  static volatile sig_atomic_t handled = 0;
  struct sigaction action {}, previous{};
  action.sa_handler = [](int) { handled = 1; };
  action.sa_flags = SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &action, &previous), 0);
  raise(SIGUSR1);
  sigaction(SIGUSR1, &previous, nullptr);
  EXPECT_EQ(handled, 1);
}

}  // namespace
