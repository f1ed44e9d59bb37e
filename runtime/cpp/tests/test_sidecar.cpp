// TensorRT sidecar validation and compatibility rules (runtime/sidecar.py), testable without TensorRT.
#include <gtest/gtest.h>

#include "der/error.hpp"
#include "der/sidecar.hpp"

namespace {

std::string sidecar(const std::string& patch_key = "", const std::string& patch_value = "") {
  std::string fields[][2] = {
      {"format", "\"der-deploy.tensorrt-plan\""}, {"format_version", "1"},
      {"card", R"({"classes": ["a", "b"], "input_size": [64, 64], "format_version": 1})"},
      {"onnx_name", "\"der.onnx\""}, {"onnx_sha256", "\"" + std::string(64, 'a') + "\""},
      {"plan_sha256", "null"}, {"tensorrt_version", "\"10.3.0\""}, {"gpu_name", "\"NVIDIA A10G\""},
      {"compute_capability", "\"8.6\""}, {"precision", "\"fp16\""},
      {"profiles", R"([{"input": "images", "min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [16, 3, 64, 64]}])"},
      {"build_seconds", "12.5"}, {"built_at", "\"2026-01-01T00:00:00+00:00\""}, {"der_deploy_version", "\"0.1.0\""}};
  std::string out = "{";
  for (auto& f : fields) {
    std::string value = f[0] == patch_key ? patch_value : f[1];
    if (value.empty()) continue;  // patch to "" removes the field
    out += (out.size() > 1 ? ", \"" : "\"") + f[0] + "\": " + value;
  }
  return out + "}";
}

std::string refusal(const std::string& text) {
  try {
    der::Sidecar::from_json(text, "der.plan.json");
  } catch (const der::EngineError& e) {
    return e.what();
  }
  return "";
}

TEST(Sidecar, ParsesAValidSidecar) {
  const auto s = der::Sidecar::from_json(sidecar(), "der.plan.json");
  EXPECT_EQ(s.card.classes, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.tensorrt_version, "10.3.0");
  ASSERT_NE(s.profile_for("images"), nullptr);
  EXPECT_EQ(s.profile_for("images")->max[0], 16);
  EXPECT_EQ(s.profile_for("other"), nullptr);
}

TEST(Sidecar, RefusesMalformedFields) {
  EXPECT_EQ(refusal(sidecar("gpu_name", "")),
            "der.plan.json: missing field(s) gpu_name; rebuild the plan with der-export --trt");
  EXPECT_EQ(refusal(sidecar("format_version", "2")),
            "der.plan.json: sidecar format version 2 is not supported (this der-deploy reads 1); rebuild the plan with "
            "der-export --trt");
  EXPECT_NE(refusal(sidecar("compute_capability", "\"sm_86\"")), "");
  EXPECT_NE(refusal(sidecar("onnx_sha256", "\"abc\"")), "");
  EXPECT_NE(refusal(sidecar("precision", "\"int4\"")), "");
  EXPECT_NE(refusal(sidecar("profiles",
                            R"([{"input": "images", "min": [8, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [16, 3, 64, 64]}])")),
            "");
  EXPECT_EQ(refusal(sidecar("card", R"({"classes": ["a"], "format_version": 9})")).rfind("der.plan.json: bad model card (", 0),
            0u);
}

TEST(Sidecar, CompatibilityRulesMatchPython) {
  const auto s = der::Sidecar::from_json(sidecar(), "der.plan.json");
  EXPECT_TRUE(der::check_compatible(s, "10.3.0", "NVIDIA A10G", "8.6", "models/der.plan").empty());
  const auto warn = der::check_compatible(s, "10.3.0", "NVIDIA RTX A5000", "8.6", "models/der.plan");
  ASSERT_EQ(warn.size(), 1u);
  EXPECT_NE(warn[0].find("der.plan was built on NVIDIA A10G and runs on NVIDIA RTX A5000 (same sm_86)"), std::string::npos);
  try {
    der::check_compatible(s, "10.4.0", "NVIDIA H100", "9.0", "models/der.plan");
    FAIL() << "a plan from another TensorRT version was accepted";
  } catch (const der::EngineError& e) {
    EXPECT_STREQ(e.what(),
                 "der.plan was built with TensorRT 10.3.0 on NVIDIA A10G (sm_86); this machine has TensorRT 10.4.0 on "
                 "NVIDIA H100 (sm_90); rebuild it from the ONNX: der-export der.onnx --trt");
  }
}

TEST(Sidecar, MissingSidecarNamesTheFix) {
  try {
    der::read_sidecar("/nonexistent/der.plan");
    FAIL();
  } catch (const der::EngineError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/der.plan.json: missing; a TensorRT plan needs its sidecar"),
              std::string::npos);
  }
}

}  // namespace
