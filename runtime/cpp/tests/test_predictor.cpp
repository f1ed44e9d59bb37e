// Predictor on a hand-written ONNX model: scores against an independent computation, logits -> sigmoid,
// batch splitting/padding, pixels, error records, engine errors and thread safety.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <unistd.h>

#include "der/predictor.hpp"
#include "tiny_suite.hpp"

namespace {

constexpr int C = 4, H = 8, W = 8;

class Tiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/der-predictor-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    model_ = dertest::standard_model();
    dertest::write_variants(model_, dir_);
    auto future = model_;
    future.card = R"({"classes": ["a", "b", "c", "d"], "input_size": [8, 8], "format_version": 2})";
    future.write(dir_ + "/future.onnx");
    std::ofstream(dir_ + "/notes.jpg") << "not an image";
  }
  static void TearDownTestSuite() { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  static std::vector<double> reference(const float* chw) { return dertest::reference(model_, chw); }

  static std::vector<float> random_batch(std::size_t n, unsigned seed) {
    return dertest::random_batch(model_, n, seed);
  }

  static std::string dir_;
  static dertest::TinyModel model_;
};
std::string Tiny::dir_;
dertest::TinyModel Tiny::model_;

TEST_F(Tiny, ReadsTheCardFromMetadata) {
  der::Predictor p(dir_ + "/scores.onnx", der::Options{});
  EXPECT_EQ(p.card().classes, (std::vector<std::string>{"c0", "c1", "c2", "c3"}));
  EXPECT_EQ(p.card().height, H);
  EXPECT_EQ(p.card().thresholds, (std::vector<double>{0.6, 0.4, 0.6, 0.4}));
  EXPECT_EQ(p.backend_name(), "onnxruntime");
}

TEST_F(Tiny, ScoresMatchAnIndependentComputation) {
  der::Predictor p(dir_ + "/scores.onnx");
  const std::size_t n = 5;
  const auto x = random_batch(n, 1);
  const auto probs = p.scores(x.data(), n);
  ASSERT_EQ(probs.size(), n * C);
  for (std::size_t i = 0; i < n; ++i) {
    const auto ref = reference(x.data() + i * 3 * H * W);
    for (int c = 0; c < C; ++c) EXPECT_NEAR(probs[i * C + c], ref[c], 1e-6) << "image " << i << " class " << c;
  }
}

TEST_F(Tiny, LogitsOutputGoesThroughPythonsSigmoid) {
  der::Predictor with_scores(dir_ + "/scores.onnx"), with_logits(dir_ + "/logits.onnx");
  const auto x = random_batch(3, 2);
  const auto a = with_scores.scores(x.data(), 3), b = with_logits.scores(x.data(), 3);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6);
}

TEST_F(Tiny, FixedBatchDimensionIsSplitAndPadded) {
  der::Predictor dynamic(dir_ + "/scores.onnx"), fixed(dir_ + "/fixed.onnx");
  const auto x = random_batch(5, 3);  // 2 + 2 + 1 (padded to 2)
  EXPECT_EQ(dynamic.scores(x.data(), 5), fixed.scores(x.data(), 5));
}

TEST_F(Tiny, PixelsArePreprocessedWithTheCard) {
  der::Predictor p(dir_ + "/scores.onnx");
  std::vector<std::uint8_t> rgb(16 * 12 * 3 + 12 * 2);  // 16x12 image with a padded stride
  std::mt19937 rng(4);
  for (auto& v : rgb) v = static_cast<std::uint8_t>(rng() & 0xFF);
  der::Image img{rgb.data(), 16, 12, 16 * 3 + 2};
  const auto pred = p.predict(img, der::Rule{});
  ASSERT_TRUE(pred.ok());
  std::vector<float> x(3 * H * W);
  const auto& card = p.card();
  der::preprocess(img, H, W, card.interpolation, card.mean.data(), card.std_dev.data(), card.bgr(), x.data());
  const auto probs = p.scores(x.data(), 1);
  ASSERT_EQ(pred.scores.size(), static_cast<std::size_t>(C));
  for (int c = 0; c < C; ++c) {
    EXPECT_EQ(pred.scores[c].first, "c" + std::to_string(c));
    EXPECT_EQ(pred.scores[c].second, probs[c]);
  }
  EXPECT_EQ(pred.labels, p.decide(probs.data()));
}

TEST_F(Tiny, UnreadableFilesBecomeErrorRecordsInOrder) {
  der::Options opts;
  opts.batch_size = 2;
  opts.decode_threads = 2;
  der::Predictor p(dir_ + "/scores.onnx", opts);
  const auto preds = p.predict({dir_ + "/missing.jpg", dir_ + "/notes.jpg", dir_, dir_ + "/missing2.png"});
  ASSERT_EQ(preds.size(), 4u);
  EXPECT_EQ(preds[0].path, dir_ + "/missing.jpg");
  for (const auto& pr : preds) {
    EXPECT_FALSE(pr.ok());
    EXPECT_EQ(pr.error.rfind(pr.path + ": ", 0), 0u) << pr.error;
    EXPECT_TRUE(pr.scores.empty());
  }
}

TEST_F(Tiny, EngineErrorsNameTheFileAndTheFix) {
  auto message = [](const std::string& path, der::Options o = der::Options{}) -> std::string {
    try {
      der::Predictor p(path, o);
    } catch (const der::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message(dir_ + "/nope.onnx"), dir_ + "/nope.onnx: no such file; check the path or export the model with der-export");
  EXPECT_EQ(message(dir_ + "/nocard.onnx"), dir_ + "/nocard.onnx has no der-deploy model card; export it with der-export");
  EXPECT_EQ(message(dir_ + "/future.onnx").rfind(dir_ + "/future.onnx: bad model card (model card format version 2", 0), 0u);
  EXPECT_EQ(message(dir_ + "/garbage.onnx"),
            dir_ + "/garbage.onnx: not a valid ONNX model (corrupt or truncated); re-export it with der-export");
  EXPECT_EQ(message(dir_ + "/model.pt").rfind(dir_ + "/model.pt: unknown engine type '.pt'", 0), 0u);
  der::Options trt;
  trt.backend = "trt";
  EXPECT_NE(message(dir_ + "/scores.onnx", trt).find("is an ONNX model, not a TensorRT engine"), std::string::npos);
}

TEST_F(Tiny, CudaOnACpuOnlyBuildIsRefusedNotDowngraded) {
  der::Options opts;
  opts.providers = {"cuda", "cpu"};
  try {
    der::Predictor p(dir_ + "/scores.onnx", opts);
    // Only reachable with a GPU build of ONNX Runtime and a device: then CUDA really runs.
    SUCCEED();
  } catch (const der::BackendUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("CUDAExecutionProvider"), std::string::npos) << e.what();
  }
}

TEST_F(Tiny, RulesAreValidated) {
  der::Predictor p(dir_ + "/scores.onnx");
  EXPECT_THROW(p.check_rule(der::Rule{1.5, std::nullopt}), der::Error);
  EXPECT_THROW(p.check_rule(der::Rule{std::nullopt, 0}), der::Error);
  EXPECT_THROW(p.check_rule(der::Rule{std::nullopt, C + 1}), der::Error);
  EXPECT_NO_THROW(p.check_rule(der::Rule{0.0, C}));
}

TEST_F(Tiny, OnePredictorSharedByThreadsGivesTheSequentialResults) {
  der::Options opts;
  opts.decode_threads = 2;
  opts.batch_size = 3;
  der::Predictor p(dir_ + "/scores.onnx", opts);
  constexpr int kThreads = 8, kRounds = 20;
  std::vector<std::vector<std::uint8_t>> images;
  std::mt19937 rng(5);
  for (int t = 0; t < kThreads; ++t) {
    images.emplace_back(20 * 10 * 3);
    for (auto& v : images.back()) v = static_cast<std::uint8_t>(rng() & 0xFF);
  }
  const auto batch = random_batch(7, 6);
  std::vector<der::Prediction> expected_pixels;
  for (int t = 0; t < kThreads; ++t) expected_pixels.push_back(p.predict(der::Image{images[t].data(), 20, 10, 0}));
  const auto expected_scores = p.scores(batch.data(), 7);
  const std::vector<std::string> files{dir_ + "/notes.jpg", dir_ + "/missing.jpg", dir_ + "/notes.jpg", dir_};
  const auto expected_files = p.predict(files);

  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const int k = (t + r) % kThreads;
        const auto got = p.predict(der::Image{images[k].data(), 20, 10, 0});
        if (got.scores != expected_pixels[k].scores || got.labels != expected_pixels[k].labels) ++mismatches[t];
        if (p.scores(batch.data(), 7) != expected_scores) ++mismatches[t];
        const auto f = p.predict(files);
        for (std::size_t i = 0; i < f.size(); ++i)
          if (f[i].path != expected_files[i].path || f[i].error != expected_files[i].error) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
