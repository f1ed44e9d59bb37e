// Model card parsing and refusal: the rules of der_deploy/card.py ModelCard.from_dict + validate.
#include <gtest/gtest.h>

#include "der/card.hpp"
#include "der/error.hpp"

namespace {

std::string refusal(const std::string& json) {
  try {
    der::Card::from_json(json);
  } catch (const der::CardError& e) {
    return e.what();
  }
  return "";
}

TEST(Card, MinimalCardTakesPythonDefaults) {
  const auto c = der::Card::from_json(R"({"classes": ["cat", "dog", 3], "format_version": 1})");
  ASSERT_EQ(c.num_classes(), 3u);
  EXPECT_EQ(c.classes[2], "3");  // str(c) as ModelCard.__post_init__
  EXPECT_EQ(c.arch, "resnet101");
  EXPECT_EQ(c.height, 448);
  EXPECT_EQ(c.width, 448);
  EXPECT_EQ(c.interpolation, der::Interpolation::Bilinear);
  EXPECT_DOUBLE_EQ(c.mean[1], 0.456);
  EXPECT_DOUBLE_EQ(c.std_dev[2], 0.225);
  EXPECT_FALSE(c.bgr());
  EXPECT_EQ(c.thresholds, std::vector<double>(3, 0.5));
}

TEST(Card, FullCardRoundTrips) {
  const std::string text = R"({"classes": ["a", "b"], "arch": "resnet18", "input_size": [64, 96],
    "interpolation": "lanczos", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 1], "channel_order": "BGR",
    "thresholds": [0.25, 1], "format_version": 1, "provenance": {"data": null}})";
  const auto c = der::Card::from_json(text);
  EXPECT_EQ(c.height, 64);
  EXPECT_EQ(c.width, 96);
  EXPECT_EQ(c.interpolation, der::Interpolation::Lanczos);
  EXPECT_TRUE(c.bgr());
  EXPECT_DOUBLE_EQ(c.std_dev[2], 1.0);
  EXPECT_EQ(c.thresholds, (std::vector<double>{0.25, 1.0}));
  const auto again = der::Card::from_json(c.to_json());
  EXPECT_EQ(again.classes, c.classes);
  EXPECT_EQ(again.interpolation, c.interpolation);
  EXPECT_EQ(again.provenance_json, c.provenance_json);
}

TEST(Card, RefusesFutureFormatVersion) {
  EXPECT_EQ(refusal(R"({"classes": ["a"], "format_version": 2})"),
            "model card format version 2 is not supported (this der-deploy reads version 1); re-export the model "
            "with this der-deploy version");
  EXPECT_NE(refusal(R"({"classes": ["a"], "format_version": "1"})"), "");
  EXPECT_EQ(refusal(R"({"classes": ["a"]})"),
            "model card has no 'format_version' field; it was not written by der-deploy");
}

TEST(Card, RefusesUnknownInterpolationAndChannelOrder) {
  EXPECT_EQ(refusal(R"({"classes": ["a"], "interpolation": "area", "format_version": 1})"),
            "model card interpolation 'area' is unknown; use one of nearest, bilinear, bicubic, lanczos, box, hamming");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "channel_order": "rgb", "format_version": 1})"),
            "model card channel_order 'rgb' is unknown; use RGB or BGR");
}

TEST(Card, RefusesUnknownFields) {
  EXPECT_EQ(refusal(R"({"classes": ["a"], "format_version": 1, "zeta": 1, "alpha": 2})"),
            "model card has unknown fields: alpha, zeta");
}

TEST(Card, RefusesThresholdCountMismatchAndRange) {
  EXPECT_EQ(refusal(R"({"classes": ["a", "b"], "thresholds": [0.5], "format_version": 1})"),
            "model card has 1 thresholds for 2 classes; give one threshold per class");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "thresholds": [1.5], "format_version": 1})"),
            "model card thresholds must be probabilities in [0, 1]");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "thresholds": ["0.5"], "format_version": 1})"),
            "model card thresholds must be probabilities in [0, 1]");
}

TEST(Card, RefusesBadShapesAndNumbers) {
  EXPECT_EQ(refusal(R"({"classes": ["a"], "input_size": [448.0, 448], "format_version": 1})"),
            "model card input_size must be two positive integers (H, W), got (448.0, 448)");
  EXPECT_NE(refusal(R"({"classes": ["a"], "input_size": [0, 448], "format_version": 1})"), "");
  EXPECT_NE(refusal(R"({"classes": ["a"], "input_size": [true, 448], "format_version": 1})"), "");
  EXPECT_NE(refusal(R"({"classes": ["a"], "mean": [0.5, 0.5], "format_version": 1})"), "");
  EXPECT_NE(refusal(R"({"classes": ["a"], "mean": [0.5, 0.5, true], "format_version": 1})"), "");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "std": [0.5, 0, 0.5], "format_version": 1})"),
            "model card std must be positive, got (0.5, 0, 0.5)");
  EXPECT_EQ(refusal(R"({"classes": ["a", "b", "a"], "format_version": 1})"), "model card has duplicate class names: a");
  EXPECT_EQ(refusal(R"({"classes": [], "format_version": 1})"),
            "model card has no classes; it needs an ordered list of class names");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "arch": "", "format_version": 1})"),
            "model card arch must be a non-empty string such as 'resnet101'");
  EXPECT_EQ(refusal(R"({"classes": ["a"], "provenance": [], "format_version": 1})"),
            "model card provenance must be a mapping");
  EXPECT_EQ(refusal(R"({"format_version": 1})"), "model card has no 'classes' field");
  EXPECT_EQ(refusal(R"([1, 2])"), "model card must be a JSON object, got list");
  EXPECT_EQ(refusal("{not json").rfind("model card is not valid JSON: ", 0), 0u);
}

}  // namespace
