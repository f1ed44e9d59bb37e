// der::Options on every path that needs no GPU: open_runner's checks (device, mode, cache_dir, precision with the
// wrong backend), the same through der_create's JSON (key names, types, max_pixels), and ONNX files that are not
// valid protobuf, which are refused from their metadata before any runtime parses them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "der/der.h"
#include "der/predictor.hpp"
#include "der/runner.hpp"
#include "tiny_suite.hpp"

namespace {

using dertest::what_of;

class OptionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/der-options-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    dertest::standard_model().write(model());
    std::ifstream in(model(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(dir_ + "/truncated.onnx", std::ios::binary) << bytes.substr(0, bytes.size() - 40);
    std::ofstream(dir_ + "/nograph.onnx", std::ios::binary) << std::string("\x08\x08", 2);  // ir_version only
    std::ofstream(dir_ + "/der.plan", std::ios::binary) << "not a plan";
    std::string px;  // a 6 x 5 PPM: 30 pixels
    for (int i = 0; i < 30; ++i) px += "\x80\x40\x20";
    std::ofstream(dir_ + "/small.ppm", std::ios::binary) << "P6\n6 5\n255\n" << px;
  }
  static void TearDownTestSuite() { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  static std::string model() { return dir_ + "/m.onnx"; }
  static std::string dir_;
};
std::string OptionsTest::dir_;

TEST_F(OptionsTest, NegativeDeviceIsOneLineBeforeAnyBackend) {
  der::Options o;
  o.device = -1;
  const std::string want = "device must be a GPU index >= 0, got -1; see der-doctor for the GPUs";
  EXPECT_EQ(what_of([&] { der::open_runner(model(), o); }), want);
  EXPECT_EQ(what_of([&] { der::open_runner(dir_ + "/der.plan", o); }), want);  // before the plan is looked at
  EXPECT_EQ(what_of([&] { der::Predictor(model(), o); }), want);
}

TEST_F(OptionsTest, DeviceGoesToAGpuBackendOnly) {
  der::Options o;
  o.device = 1;
  EXPECT_EQ(what_of([&] { der::open_runner(model(), o); }),
            model() + ": --device 1 needs a GPU provider; add --providers cuda,cpu (ONNX Runtime on the CPU has no "
            "device index)");
  o.backend = "openvino";
  EXPECT_NE(what_of([&] { der::open_runner(model(), o); }).find("--device applies to GPUs"), std::string::npos);
  // A plan on device 1: the runner is made for that device (activate() then checks it exists); a build without
  // TensorRT refuses it as it refuses device 0.
  der::Options trt;
  trt.device = 1;
  if (der::has_tensorrt()) {
    EXPECT_EQ(der::open_runner(dir_ + "/der.plan", trt)->is_active(), false);
  } else {
    EXPECT_THROW(der::open_runner(dir_ + "/der.plan", trt), der::BackendUnavailable);
    EXPECT_THROW(der::make_trt_runner(dir_ + "/der.plan", 1), der::BackendUnavailable);
  }
}

TEST_F(OptionsTest, OpenVinoSettingsWithAnotherBackendAreRefused) {
  der::Options o;
  o.mode = "throughput";
  EXPECT_EQ(what_of([&] { der::open_runner(model(), o); }).rfind("--mode throughput applies to --backend openvino only", 0),
            0u);
  o = der::Options{};
  o.cache_dir = dir_ + "/cache";
  EXPECT_EQ(what_of([&] { der::open_runner(model(), o); }).rfind("--cache-dir applies to --backend openvino only", 0),
            0u);
  o = der::Options{};
  o.mode = "fast";
  for (const char* backend : {"auto", "openvino"}) {
    o.backend = backend;
    EXPECT_EQ(what_of([&] { der::open_runner(model(), o); }),
              "unknown OpenVINO mode 'fast'; use latency or throughput (with --backend openvino)");
  }
}

TEST_F(OptionsTest, CorruptOnnxIsRefusedFromItsMetadataInOneLine) {
  EXPECT_EQ(what_of([&] { der::Predictor(dir_ + "/truncated.onnx"); }),
            dir_ + "/truncated.onnx: not a valid ONNX model (corrupt or truncated); re-export it with der-export");
  EXPECT_EQ(what_of([&] { der::Predictor(dir_ + "/nograph.onnx"); }),
            dir_ + "/nograph.onnx: not a valid ONNX model (no graph); re-export it with der-export");
}

TEST_F(OptionsTest, CAbiTakesEveryKeyAndNamesTheBadOne) {
  der_predictor* h = nullptr;
  const std::string path = model();
  auto create = [&](const std::string& json) {
    const int rc = der_create(path.c_str(), json.c_str(), &h);
    if (rc == DER_OK) der_destroy(h);
    h = nullptr;
    return rc;
  };
  EXPECT_EQ(create(R"({"backend": "ort", "precision": "", "mode": "latency", "cache_dir": "", "device": 0,
                       "providers": "cpu", "intra_op_threads": 1, "batch_size": 3, "decode_threads": 0,
                       "max_pixels": 1000})"), DER_OK) << der_last_error(nullptr);
  EXPECT_EQ(create(R"({"device": -1})"), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)), "device must be a GPU index >= 0, got -1; see der-doctor for the GPUs");
  EXPECT_EQ(create(R"({"device": "1"})"), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(der_last_error(nullptr)), R"(der_create: option 'device' must be an integer, got "1")");
  EXPECT_EQ(create(R"({"device": 1.5})"), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(create(R"({"mode": "fast"})"), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)),
            "unknown OpenVINO mode 'fast'; use latency or throughput (with --backend openvino)");
  EXPECT_EQ(create(R"({"mode": 1})"), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(create(R"({"cache_dir": "/tmp/x"})"), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)).rfind("--cache-dir applies to --backend openvino only", 0), 0u);
  EXPECT_EQ(create(R"({"providers": ["cpu", 3]})"), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(create(R"({"max_pixels": -1})"), DER_ERROR);
  EXPECT_EQ(std::string(der_last_error(nullptr)), "max_pixels must be >= 0 (0: no limit), got -1");
  EXPECT_EQ(create(R"({"max_pixels": "big"})"), DER_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(create(R"({"threads": 2})"), DER_ERROR);
  const std::string unknown = der_last_error(nullptr);
  for (const char* key : {"backend", "precision", "mode", "cache_dir", "device", "providers", "intra_op_threads",
                          "batch_size", "decode_threads", "max_pixels"})
    EXPECT_NE(unknown.find(key), std::string::npos) << key << " missing from: " << unknown;
}

TEST_F(OptionsTest, CAbiMaxPixelsGivesAPerFileRecord) {
  const std::string image = dir_ + "/small.ppm";
  const char* paths[] = {image.c_str()};
  for (const auto& [limit, too_large] : {std::pair<int, bool>{29, true}, {30, false}, {0, false}}) {
    der_predictor* h = nullptr;
    const std::string json = R"({"max_pixels": )" + std::to_string(limit) + "}";
    ASSERT_EQ(der_create(model().c_str(), json.c_str(), &h), DER_OK) << der_last_error(nullptr);
    char* out = nullptr;
    ASSERT_EQ(der_predict_files(h, paths, 1, -1.0, 0, &out), DER_OK) << der_last_error(h);
    const auto recs = nlohmann::json::parse(out);
    der_free_string(out);
    der_destroy(h);
    ASSERT_EQ(recs.size(), 1u);
    SCOPED_TRACE(recs.dump());
    EXPECT_EQ(recs[0].contains("error"), too_large);
    if (too_large) {
      const std::string error = recs[0]["error"];
      EXPECT_EQ(error, image + ": too large: 6\xc3\x97" "5 > 29 pixels; raise --max-pixels");
    }
  }
}

}  // namespace
