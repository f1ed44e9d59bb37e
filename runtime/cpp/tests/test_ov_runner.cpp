// The OpenVINO backend (compiled only with DER_WITH_OPENVINO) on the hand-written ONNX model: scores against an
// independent computation, the precision read back from the compiled model, bf16/fp16 refused in one line on a
// CPU without them natively (OpenVINO itself is asked which branch applies), option errors, threads, the C ABI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <unistd.h>

#include <openvino/openvino.hpp>

#include "der/der.h"
#include "der/predictor.hpp"
#include "der/runner.hpp"
#include "onnx_model.hpp"

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
    model_.classes = C;
    model_.height = H;
    model_.width = W;
    model_.weight = {1.5f, -2.0f, 0.5f, 3.0f, 0.25f, 1.0f, -1.0f, -3.0f, 2.0f, 0.5f, 1.0f, 0.1f};
    model_.bias = {0.1f, -0.2f, 0.0f, 0.3f};
    model_.card = dertest::tiny_card(C, H, W);
    model_.write(dir_ + "/scores.onnx");
    auto logits = model_;
    logits.scores = false;
    logits.write(dir_ + "/logits.onnx");
    auto fixed = model_;
    fixed.batch = 2;
    fixed.write(dir_ + "/fixed.onnx");
    auto nocard = model_;
    nocard.card = "";
    nocard.write(dir_ + "/nocard.onnx");
    std::ofstream(dir_ + "/garbage.onnx") << "this is not a protobuf";
  }
  static void TearDownTestSuite() { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  static der::Options ov(const std::string& precision = "") {
    der::Options o;
    o.backend = "openvino";
    o.precision = precision;
    return o;
  }

  // Independent reference: plane means in double, then the linear layer and the logistic function.
  static std::vector<double> reference(const float* chw) {
    double mean[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      for (int i = 0; i < H * W; ++i) mean[k] += chw[k * H * W + i];
      mean[k] /= H * W;
    }
    std::vector<double> p(C);
    for (int c = 0; c < C; ++c) {
      double z = model_.bias[c];
      for (int k = 0; k < 3; ++k) z += mean[k] * model_.weight[k * C + c];
      p[c] = 1.0 / (1.0 + std::exp(-z));
    }
    return p;
  }

  static std::vector<float> random_batch(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(n * 3 * H * W);
    for (auto& v : x) v = dist(rng);
    return x;
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
    EXPECT_EQ(what.substr(what.size() - 9), " CPU fp32") << what;
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
      EXPECT_EQ(what.substr(what.size() - precision.size() - 1), " " + precision) << what;
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
  auto bad_backend = ov();
  bad_backend.backend = "openvno";
  EXPECT_EQ(error_of(model, bad_backend), "unknown backend 'openvno'; use one of auto, ort, trt, openvino");
}

TEST_F(OvRunner, EngineErrorsNameTheFileAndTheFix) {
  EXPECT_EQ(error_of(dir_ + "/nocard.onnx", ov()),
            dir_ + "/nocard.onnx has no der-deploy model card; export it with der-export");
  const std::string garbage = error_of(dir_ + "/garbage.onnx", ov());
  EXPECT_EQ(garbage.rfind(dir_ + "/garbage.onnx: cannot load ONNX model (", 0), 0u) << garbage;
  EXPECT_EQ(garbage.find('\n'), std::string::npos) << garbage;
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

TEST_F(OvRunner, CAbiTakesBackendAndPrecision) {
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
}

}  // namespace
