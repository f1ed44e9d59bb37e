// The C ABI (der.h): status codes and the per-handle / per-thread error strings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "der/der.h"
#include "onnx_model.hpp"

namespace {

class CAbi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/der-cabi-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    dertest::TinyModel m;
    m.weight = {1, 0, 0, -1, 0, 1, 0, -1, 0, 0, 1, 1};
    m.bias = {0, 0, 0, 0};
    m.card = dertest::tiny_card(4, 8, 8);
    m.write(dir_ + "/m.onnx");
  }
  static void TearDownTestSuite() { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  static std::string dir_;
};
std::string CAbi::dir_;

TEST_F(CAbi, MissingEngineReportsThroughLastErrorOfNull) {
  der_predictor* h = reinterpret_cast<der_predictor*>(0x1);
  EXPECT_EQ(der_create((dir_ + "/missing.onnx").c_str(), nullptr, &h), DER_ERROR_ENGINE);
  EXPECT_EQ(h, nullptr);
  EXPECT_EQ(std::string(der_last_error(nullptr)),
            dir_ + "/missing.onnx: no such file; check the path or export the model with der-export");
}

TEST_F(CAbi, BadOptionsAreRefusedWithAMessage) {
  der_predictor* h = nullptr;
  EXPECT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{\"batch_size\": 0}", &h), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)), "batch_size must be >= 1, got 0");
  EXPECT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{\"batchsize\": 2}", &h), DER_ERROR);
  EXPECT_NE(std::string(der_last_error(nullptr)).find("unknown option 'batchsize'"), std::string::npos);
  EXPECT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{oops", &h), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{\"providers\": [\"tpu\"]}", &h), DER_ERROR_BACKEND);
  EXPECT_NE(std::string(der_last_error(nullptr)).find("unknown execution provider 'tpu'"), std::string::npos);
  EXPECT_EQ(der_create(nullptr, nullptr, &h), DER_ERROR_INVALID_ARGUMENT);
}

TEST_F(CAbi, PredictAndPerHandleErrors) {
  der_predictor* h = nullptr;
  ASSERT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{\"batch_size\": 2, \"decode_threads\": 1}", &h), DER_OK)
      << der_last_error(nullptr);
  char* card = nullptr;
  ASSERT_EQ(der_card_json(h, &card), DER_OK);
  EXPECT_EQ(nlohmann::json::parse(card)["classes"].size(), 4u);
  der_free_string(card);

  std::vector<std::uint8_t> rgb(6 * 5 * 3, 200);
  char* out = nullptr;
  ASSERT_EQ(der_predict_pixels(h, rgb.data(), 6, 5, 0, -1.0, 2, &out), DER_OK) << der_last_error(h);
  const auto rec = nlohmann::json::parse(out);
  der_free_string(out);
  EXPECT_EQ(rec["labels"].size(), 2u);
  EXPECT_EQ(rec["scores"].size(), 4u);

  EXPECT_EQ(der_predict_pixels(h, rgb.data(), 6, 5, 0, -1.0, 9, &out), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(h)), "top_k must be between 1 and the model's 4 classes, got 9");
  EXPECT_EQ(der_predict_pixels(h, nullptr, 6, 5, 0, -1.0, 0, &out), DER_ERROR_INVALID_ARGUMENT);

  const std::string bad = dir_ + "/missing.jpg";
  const char* paths[] = {bad.c_str()};
  ASSERT_EQ(der_predict_files(h, paths, 1, 0.5, 0, &out), DER_OK);
  const auto recs = nlohmann::json::parse(out);
  der_free_string(out);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["path"], bad);
  EXPECT_EQ(recs[0]["error"].get<std::string>().rfind(bad + ": ", 0), 0u);

  float probs[4];
  std::vector<float> x(3 * 8 * 8, 0.0f);
  ASSERT_EQ(der_scores(h, x.data(), 1, probs, 4), DER_OK);
  for (float v : probs) EXPECT_FLOAT_EQ(v, 0.5f);  // zero input, zero bias: sigmoid(0)
  EXPECT_EQ(der_scores(h, x.data(), 1, probs, 3), DER_ERROR_INVALID_ARGUMENT);
  der_destroy(h);
  EXPECT_STREQ(der_version(), "0.1.0");
}

}  // namespace
