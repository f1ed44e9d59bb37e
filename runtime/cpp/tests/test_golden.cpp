// The artifact contract: tests/golden/card.json (ModelCard.save) and tests/golden/sidecar.json (write_sidecar),
// written once by the Python writers, read by the C++ readers field by field. The Python side reads the same
// files (tests/golden/README.md); a change to either side's format breaks one of the two.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include "der/card.hpp"
#include "der/error.hpp"
#include "der/sidecar.hpp"

#ifndef DER_GOLDEN_DIR
#error "DER_GOLDEN_DIR (tests/golden) is set by CMakeLists.txt"
#endif

namespace {

const std::string kGolden = DER_GOLDEN_DIR;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the golden file");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every field of the golden card, as literals (both files carry the same card).
void expect_golden_card(const der::Card& c) {
  // "crème brûlée" is stored as \u escapes (json.dumps' ensure_ascii) and must come back as UTF-8.
  EXPECT_EQ(c.classes, (std::vector<std::string>{"cat", "dog", "cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e"}));
  EXPECT_EQ(c.num_classes(), 3u);
  EXPECT_EQ(c.arch, "resnet50");
  EXPECT_EQ(c.height, 64);  // input_size is [H, W] = [64, 48]
  EXPECT_EQ(c.width, 48);
  EXPECT_EQ(c.interpolation, der::Interpolation::Bicubic);
  EXPECT_STREQ(der::interpolation_name(c.interpolation), "bicubic");
  EXPECT_EQ(c.mean, (std::array<double, 3>{0.5, 0.25, 0.125}));
  EXPECT_EQ(c.std_dev, (std::array<double, 3>{0.25, 0.5, 0.75}));
  EXPECT_EQ(c.channel_order, "BGR");
  EXPECT_TRUE(c.bgr());
  EXPECT_EQ(c.thresholds, (std::vector<double>{0.25, 0.5, 0.875}));
  EXPECT_EQ(c.format_version, 1);
  EXPECT_EQ(c.provenance_json,
            "{\"data\":\"data/voc\",\"created\":\"2025-01-02T03:04:05+00:00\",\"der_deploy_version\":\"0.1.0\","
            "\"epochs\":3,\"map\":0.8125}");
  EXPECT_EQ(c.decode, "full");  // absent from the file: the default
}

TEST(Golden, CardFromPython) {
  const der::Card c = der::Card::from_json(read_text(kGolden + "/card.json"));
  expect_golden_card(c);
  // Written back in Python's field order, it reads back to the same card.
  expect_golden_card(der::Card::from_json(c.to_json()));
}

TEST(Golden, SidecarFromPython) {
  // read_sidecar takes the plan's path and reads "<plan>.json": here "sidecar" -> "sidecar.json".
  EXPECT_EQ(der::sidecar_path(kGolden + "/sidecar"), kGolden + "/sidecar.json");
  const der::Sidecar s = der::read_sidecar(kGolden + "/sidecar");
  expect_golden_card(s.card);
  EXPECT_EQ(s.onnx_name, "der.onnx");
  EXPECT_EQ(s.onnx_sha256, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(s.plan_sha256, "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210");
  EXPECT_EQ(s.tensorrt_version, "10.3.0");
  EXPECT_EQ(s.gpu_name, "NVIDIA A10G");
  EXPECT_EQ(s.compute_capability, "8.6");
  EXPECT_EQ(s.precision, "fp16");
  ASSERT_EQ(s.profiles.size(), 1u);
  const der::Profile& p = s.profiles[0];
  EXPECT_EQ(p.input, "images");
  EXPECT_EQ(p.min, (std::vector<std::int64_t>{1, 3, 64, 48}));
  EXPECT_EQ(p.opt, (std::vector<std::int64_t>{8, 3, 64, 48}));
  EXPECT_EQ(p.max, (std::vector<std::int64_t>{32, 3, 64, 48}));
  ASSERT_NE(s.profile_for("images"), nullptr);
  EXPECT_EQ(s.profile_for("images")->max, p.max);
  EXPECT_EQ(s.profile_for("logits"), nullptr);
  // The machine checks of the golden plan: same TensorRT + compute capability loads, another refuses.
  EXPECT_TRUE(der::check_compatible(s, "10.3.0", "NVIDIA A10G", "8.6", "der.plan").empty());
  EXPECT_THROW(der::check_compatible(s, "10.4.0", "NVIDIA A10G", "8.6", "der.plan"), der::EngineError);
}

}  // namespace
