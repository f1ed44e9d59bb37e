// The TensorRT runner's shape, version, hash, device and log logic (src/trt_logic.cpp), without a GPU or TensorRT.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "der/error.hpp"
#include "der/sidecar.hpp"
#include "tiny_suite.hpp"
#include "trt_logic.hpp"

namespace {

using der::trt::Shape;

using dertest::what_of;

TEST(TrtLogic, InputShapeFillsEveryDynamicDimensionFromTheProfile) {
  // A third-party plan with dynamic H and W: setInputShape needs all of them, not just the batch.
  const Shape engine{-1, 3, -1, -1}, lo{1, 3, 32, 32}, hi{16, 3, 64, 48};
  EXPECT_EQ(der::trt::input_shape(engine, lo, hi, 4, "images", "der.plan"), (Shape{4, 3, 64, 48}));
  EXPECT_EQ(der::trt::input_shape(engine, lo, hi, 16, "images", "der.plan"), (Shape{16, 3, 64, 48}));
  // Fixed dimensions stay as the engine has them.
  EXPECT_EQ(der::trt::input_shape({-1, 3, 64, 64}, {1, 3, 64, 64}, {8, 3, 64, 64}, 2, "images", "der.plan"),
            (Shape{2, 3, 64, 64}));
}

TEST(TrtLogic, InputShapeRefusesABatchOutsideTheProfileOrAnotherRank) {
  const Shape engine{-1, 3, -1, -1}, lo{2, 3, 32, 32}, hi{16, 3, 64, 64};
  EXPECT_EQ(what_of([&] { der::trt::input_shape(engine, lo, hi, 17, "images", "der.plan"); }),
            "der.plan: batch 17 is outside the profile of 'images' (2..16)");
  EXPECT_NE(what_of([&] { der::trt::input_shape(engine, lo, hi, 1, "images", "der.plan"); }), "");
  EXPECT_NE(what_of([&] { der::trt::input_shape(engine, {1, 3}, {8, 3}, 1, "images", "der.plan"); }), "");
}

TEST(TrtLogic, OutputSizesComeFromTheResolvedShape) {
  EXPECT_EQ(der::trt::output_elements({4, 20}, 4, "scores", "der.plan"), 80u);
  EXPECT_EQ(der::trt::output_elements({4, 20, 7, 7}, 4, "cadm", "der.plan"), 4u * 20 * 7 * 7);
  // A dimension still dynamic would be a huge allocation from (size_t)-1: refused instead.
  EXPECT_EQ(what_of([] { der::trt::output_elements({4, -1}, 4, "scores", "/m/der.plan"); }),
            "/m/der.plan: cannot size 'scores' (shape (4, -1) after setting the inputs); rebuild it with "
            "der-export --trt");
  EXPECT_EQ(what_of([] { der::trt::output_elements({8, 20}, 4, "scores", "/m/der.plan"); }),
            "der.plan: unexpected output shape (8, 20) for 'scores' at batch 4");
  EXPECT_NE(what_of([] { der::trt::output_elements({}, 4, "scores", "der.plan"); }), "");
  EXPECT_EQ(der::trt::elements({2, 3, 4}, "images", "der.plan"), 24u);
}

TEST(TrtLogic, LibraryVersionUsesTheRunningBuildNumber) {
  const der::trt::LibVersion running{10, 3, 0, 30};
  EXPECT_EQ(der::trt::library_version("10.3.0.30", running), "10.3.0.30");
  EXPECT_EQ(der::trt::library_version("10.3.0", running), "10.3.0");  // a three-part record carries no build
  // A plan built with build 26 must not pass for a library of build 30.
  EXPECT_EQ(der::trt::library_version("10.3.0.26", running), "10.3.0.30");
  EXPECT_EQ(der::trt::library_version("10.16.0.72", {10, 16, 0, 72}), "10.16.0.72");
  EXPECT_EQ(der::trt::library_version("11.1.0", {11, 1, 0, 106}), "11.1.0");
  EXPECT_EQ(der::trt::library_version("10.13.3", {10, 13, 2, 9}), "10.13.2.9");
}

TEST(TrtLogic, Sha256MatchesFips180Vectors) {
  EXPECT_EQ(der::trt::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(der::trt::sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(der::trt::sha256_hex(two.data(), two.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(der::trt::sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Every padding case around the 64-byte block (values from Python's hashlib).
  const std::pair<std::size_t, const char*> cases[] = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
      {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"}};
  for (const auto& c : cases) {
    std::vector<unsigned char> data(c.first);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>((i * 7 + 3) % 256);
    EXPECT_EQ(der::trt::sha256_hex(data.data(), data.size()), c.second) << c.first << " bytes";
  }
}

TEST(TrtLogic, PlanHashIsCheckedAgainstTheSidecar) {
  const std::string text = "not really a plan";
  const std::vector<char> plan(text.begin(), text.end());
  der::Sidecar s;
  s.plan_sha256 = "8ce949304c8d9d433d51546fa609d34eb5713ee2c03a4e65da5f38c5ceeda3a9";
  EXPECT_EQ(what_of([&] { der::trt::check_plan_hash(s, plan, "/m/der.plan"); }), "");
  std::vector<char> replaced = plan;
  replaced.back() = 'X';
  EXPECT_EQ(what_of([&] { der::trt::check_plan_hash(s, replaced, "/m/der.plan"); }),
            "/m/der.plan does not match its sidecar (SHA-256 differs); the plan was replaced or corrupted -- rebuild "
            "both with der-export --trt");
  s.plan_sha256.clear();  // plan_sha256 null: older sidecars are not checked
  EXPECT_EQ(what_of([&] { der::trt::check_plan_hash(s, replaced, "/m/der.plan"); }), "");
}

TEST(TrtLogic, DeviceIndexIsTheRequestedOne) {
  EXPECT_EQ(der::trt::check_device(1, 2), 1);
  EXPECT_EQ(der::trt::check_device(0, 1), 0);
  EXPECT_THROW(der::trt::check_device(2, 2), der::BackendUnavailable);
  EXPECT_THROW(der::trt::check_device(0, 0), der::BackendUnavailable);
  EXPECT_THROW(der::trt::check_device(-1, 2), der::EngineError);
}

TEST(TrtLogic, OutputNameIsCheckedBeforeRunning) {
  const std::vector<der::TensorInfo> outputs{{"logits", {-1, 20}}, {"scores", {-1, 20}}};
  EXPECT_EQ(der::trt::find_output(outputs, "scores", "der.plan"), 1u);
  EXPECT_EQ(what_of([&] { der::trt::find_output(outputs, "cadm", "der.plan"); }),
            "der.plan has no output 'cadm'; rebuild it with der-export --trt");
}

TEST(TrtLogic, LogQuotesThisCallsErrorsOnly) {
  der::trt::LogCapture log;
  EXPECT_EQ(log.summary(), "TensorRT reported no error");
  log.log(der::trt::LogCapture::kError, "first failure\n");
  log.log(der::trt::LogCapture::kInfo, "just info");
  EXPECT_EQ(log.summary(), "first failure");
  log.reset();  // the next call must not quote the earlier message
  EXPECT_EQ(log.summary(), "TensorRT reported no error");
  log.log(der::trt::LogCapture::kInternalError, "a\nb");
  log.log(der::trt::LogCapture::kError, "c");
  EXPECT_EQ(log.summary(), "a b | c");
  for (int i = 0; i < 7; ++i) log.log(der::trt::LogCapture::kError, ("e" + std::to_string(i)).c_str());
  EXPECT_EQ(log.summary(), "e2 | e3 | e4 | e5 | e6");  // the last five
}

TEST(TrtLogic, LogKeepsWarningsSuchAsCudaInitializationFailure) {
  der::trt::LogCapture log;
  log.log(der::trt::LogCapture::kWarning, "CUDA initialization failure with error: 35");
  EXPECT_EQ(log.summary(), "CUDA initialization failure with error: 35");
  EXPECT_TRUE(log.driver_too_old());
  log.log(der::trt::LogCapture::kError, "createInferRuntime failed");
  EXPECT_EQ(log.summary(), "createInferRuntime failed");  // errors first, as runtime/tensorrt.py
  EXPECT_FALSE(log.driver_too_old());
  log.reset();
  log.log(der::trt::LogCapture::kWarning, "CUDA initialization failure with error: 350");
  EXPECT_FALSE(log.driver_too_old());
  log.reset();
  log.log(der::trt::LogCapture::kWarning, "Cuda error 35 in init");
  EXPECT_TRUE(log.driver_too_old());
}

}  // namespace
