// The C ABI (der.h): status codes, the per-handle / per-thread error strings, and the typed records against
// the JSON ones.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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
    write_ppm(dir_ + "/red.ppm", 200, 30, 30);
    write_ppm(dir_ + "/blue.ppm", 20, 40, 220);
    write_ppm(dir_ + "/gr\xffy.ppm", 128, 128, 90);  // not UTF-8: the JSON writes \xff, the typed path the byte
  }
  static void write_ppm(const std::string& path, unsigned char r, unsigned char g, unsigned char b) {
    std::string px;
    for (int i = 0; i < 6 * 5; ++i) px += {static_cast<char>(r), static_cast<char>(g), static_cast<char>(b)};
    std::ofstream(path, std::ios::binary) << "P6\n6 5\n255\n" << px;
  }
  der_predictor* open() {
    der_predictor* h = nullptr;
    EXPECT_EQ(der_create((dir_ + "/m.onnx").c_str(), "{\"batch_size\": 2, \"decode_threads\": 1}", &h), DER_OK)
        << der_last_error(nullptr);
    return h;
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

// One typed record equals the JSON record of the same call: path (the bytes given; JSON: path text), error,
// labels (names and ids), scores (the JSON's shortest repr of each float32 reads back to the same float).
void expect_same(const der_prediction& typed, const nlohmann::json& rec, const std::string& path,
                 const std::vector<std::string>& classes) {
  EXPECT_EQ(std::string(typed.path), path);
  if (rec.contains("error")) {
    ASSERT_NE(typed.error, nullptr);
    EXPECT_EQ(std::string(typed.error), rec["error"].get<std::string>());
    EXPECT_EQ(typed.num_labels, 0u);
    EXPECT_EQ(typed.labels, nullptr);
    EXPECT_EQ(typed.label_ids, nullptr);
    EXPECT_EQ(typed.num_scores, 0u);
    EXPECT_EQ(typed.scores, nullptr);
    return;
  }
  EXPECT_EQ(typed.error, nullptr);
  const auto labels = rec["labels"].get<std::vector<std::string>>();
  ASSERT_EQ(typed.num_labels, labels.size());
  for (std::size_t k = 0; k < labels.size(); ++k) {
    EXPECT_EQ(std::string(typed.labels[k]), labels[k]);
    ASSERT_GE(typed.label_ids[k], 0);
    EXPECT_EQ(classes.at(static_cast<std::size_t>(typed.label_ids[k])), labels[k]);
  }
  ASSERT_EQ(typed.num_scores, classes.size());
  ASSERT_EQ(rec["scores"].size(), classes.size());
  std::size_t c = 0;
  for (auto it = rec["scores"].begin(); it != rec["scores"].end(); ++it, ++c) {
    EXPECT_EQ(it.key(), classes[c]);  // card order in both
    EXPECT_EQ(typed.scores[c], static_cast<float>(it->get<double>())) << it.key();
  }
}

TEST_F(CAbi, TypedFilesEqualTheJsonRecords) {
  der_predictor* h = open();
  ASSERT_NE(h, nullptr);
  const char* const* names = nullptr;
  size_t num_classes = 0;
  ASSERT_EQ(der_classes(h, &names, &num_classes), DER_OK);
  const std::vector<std::string> classes(names, names + num_classes);
  EXPECT_EQ(classes, (std::vector<std::string>{"c0", "c1", "c2", "c3"}));

  const std::vector<std::string> files = {dir_ + "/red.ppm", dir_ + "/missing.jpg", dir_ + "/gr\xffy.ppm",
                                          dir_ + "/blue.ppm", dir_};
  std::vector<const char*> paths;
  for (const auto& f : files) paths.push_back(f.c_str());
  for (const auto& [threshold, top_k] : std::vector<std::pair<double, int>>{{-1, 0}, {0.5, 0}, {-1, 2}, {0.45, 3}}) {
    char* text = nullptr;
    ASSERT_EQ(der_predict_files(h, paths.data(), paths.size(), threshold, top_k, &text), DER_OK);
    const auto json = nlohmann::json::parse(text);
    der_free_string(text);
    der_prediction* out = nullptr;
    size_t n = 0;
    ASSERT_EQ(der_predict_files_typed(h, paths.data(), paths.size(), threshold, top_k, &out, &n), DER_OK)
        << der_last_error(h);
    ASSERT_EQ(n, files.size());
    for (size_t i = 0; i < n; ++i) {
      SCOPED_TRACE(files[i] + " threshold " + std::to_string(threshold) + " top_k " + std::to_string(top_k));
      expect_same(out[i], json[i], files[i], classes);
    }
    // Errors are per record, the others still predicted; the non-UTF-8 name is raw here, escaped in the JSON.
    EXPECT_NE(out[1].error, nullptr);
    EXPECT_NE(out[4].error, nullptr);
    EXPECT_EQ(out[0].error, nullptr);
    EXPECT_EQ(out[2].error, nullptr);
    EXPECT_EQ(json[2]["path"], dir_ + "/gr\\xffy.ppm");
    if (top_k > 0 && threshold < 0) EXPECT_EQ(out[0].num_labels, static_cast<size_t>(top_k));
    der_release_predictions(out, n);
  }
  der_prediction* none = reinterpret_cast<der_prediction*>(0x1);
  size_t n = 7;
  EXPECT_EQ(der_predict_files_typed(h, nullptr, 0, -1, 0, &none, &n), DER_OK);
  EXPECT_EQ(none, nullptr);
  EXPECT_EQ(n, 0u);
  der_release_predictions(nullptr, 0);  // a no-op
  der_destroy(h);
}

TEST_F(CAbi, TypedPixelsEqualTheJsonRecordAndFailLikeIt) {
  der_predictor* h = open();
  ASSERT_NE(h, nullptr);
  const std::vector<std::string> classes{"c0", "c1", "c2", "c3"};
  std::vector<std::uint8_t> rgb(6 * 5 * 3);
  for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<std::uint8_t>(i * 7);
  char* text = nullptr;
  ASSERT_EQ(der_predict_pixels(h, rgb.data(), 6, 5, 0, -1.0, 0, &text), DER_OK);
  const auto rec = nlohmann::json::parse(text);
  der_free_string(text);
  der_prediction* out = nullptr;
  ASSERT_EQ(der_predict_pixels_typed(h, rgb.data(), 6, 5, 0, -1.0, 0, &out), DER_OK) << der_last_error(h);
  ASSERT_NE(out, nullptr);
  expect_same(*out, rec, "", classes);
  der_release_predictions(out, 1);

  out = reinterpret_cast<der_prediction*>(0x1);
  EXPECT_EQ(der_predict_pixels_typed(h, rgb.data(), 6, 5, 0, -1.0, 9, &out), DER_ERROR);
  EXPECT_EQ(out, nullptr);
  EXPECT_EQ(std::string(der_last_error(h)), "top_k must be between 1 and the model's 4 classes, got 9");
  EXPECT_EQ(der_predict_pixels_typed(h, rgb.data(), 0, 5, 0, -1.0, 0, &out), DER_ERROR);
  EXPECT_NE(std::string(der_last_error(h)).find("positive width and height"), std::string::npos);
  EXPECT_EQ(der_predict_pixels_typed(h, nullptr, 6, 5, 0, -1.0, 0, &out), DER_ERROR_INVALID_ARGUMENT);
  size_t n = 0;
  const char* paths[] = {nullptr};
  EXPECT_EQ(der_predict_files_typed(h, paths, 1, -1.0, 0, &out, &n), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(der_predict_files_typed(h, paths, 1, -1.0, 0, nullptr, &n), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(der_classes(nullptr, nullptr, nullptr), DER_ERROR_INVALID_ARGUMENT);
  der_destroy(h);
}

TEST_F(CAbi, ReleaseFreesTheTypedRecords) {
#if defined(__GLIBC__) && defined(M_MMAP_THRESHOLD)
  // A result is one allocation (der.h); 2000 error records make it ~1 MB, which glibc's malloc maps with mmap
  // once the threshold is pinned, and mallinfo2 counts mapped bytes exactly: they must all come back.
  ASSERT_EQ(mallopt(M_MMAP_THRESHOLD, 64 * 1024), 1);
  der_predictor* h = open();
  ASSERT_NE(h, nullptr);
  const std::string missing = dir_ + "/" + std::string(200, 'm') + ".jpg";
  const std::vector<const char*> paths(2000, missing.c_str());
  const auto before = mallinfo2().hblkhd;
  der_prediction* out = nullptr;
  size_t n = 0;
  ASSERT_EQ(der_predict_files_typed(h, paths.data(), paths.size(), -1.0, 0, &out, &n), DER_OK);
  ASSERT_EQ(n, paths.size());
  EXPECT_EQ(std::string(out[1999].path), missing);
  EXPECT_EQ(std::string(out[1999].error).rfind(missing + ": ", 0), 0u);
  EXPECT_GE(mallinfo2().hblkhd, before + 2000 * (2 * missing.size()));  // held: paths + messages
  der_release_predictions(out, n);
  EXPECT_EQ(mallinfo2().hblkhd, before);
  der_destroy(h);
#else
  GTEST_SKIP() << "needs glibc's mallinfo2";
#endif
}

}  // namespace

