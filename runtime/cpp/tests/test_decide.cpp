// Decision rules: Predictor.decide of runtime/predictor.py, including its tie order.
#include <gtest/gtest.h>

#include "der/predictor.hpp"

namespace {

std::vector<std::size_t> decide(std::vector<float> p, std::vector<double> th, std::optional<double> t = std::nullopt,
                                std::optional<int> k = std::nullopt) {
  return der::decide_indices(p.data(), th, der::Rule{t, k});
}

using V = std::vector<std::size_t>;

TEST(Decide, CardThresholdsPerClassByDescendingScore) {
  // class 1 misses its own 0.9 threshold although its score is the highest.
  EXPECT_EQ(decide({0.6f, 0.8f, 0.7f, 0.1f}, {0.5, 0.9, 0.5, 0.05}), (V{2, 0, 3}));
}

TEST(Decide, ScoreEqualToThresholdIsKept) {
  EXPECT_EQ(decide({0.5f, 0.49999997f}, {0.5, 0.5}), (V{0}));
  // float32 0.3 is above the double 0.3: Python compares float64(float32) >= threshold too.
  EXPECT_EQ(decide({0.3f}, {0.3}), (V{0}));
  EXPECT_EQ(decide({0.7f}, {0.7}), (V{}));  // float32 0.7 < 0.7
}

TEST(Decide, TiesKeepClassOrder) {
  EXPECT_EQ(decide({0.2f, 0.9f, 0.2f, 0.9f, 0.2f}, {0, 0, 0, 0, 0}), (V{1, 3, 0, 2, 4}));
  EXPECT_EQ(decide({0.2f, 0.9f, 0.2f, 0.9f}, {1, 1, 1, 1}, std::nullopt, 3), (V{1, 3, 0}));
}

TEST(Decide, OneThresholdForEveryClass) {
  EXPECT_EQ(decide({0.6f, 0.8f, 0.7f}, {0.99, 0.99, 0.99}, 0.65), (V{1, 2}));
  EXPECT_EQ(decide({0.6f, 0.8f, 0.7f}, {0.0, 0.0, 0.0}, 1.0), (V{}));
}

TEST(Decide, TopKAloneIgnoresThresholds) {
  EXPECT_EQ(decide({0.01f, 0.02f, 0.03f}, {0.5, 0.5, 0.5}, std::nullopt, 2), (V{2, 1}));
}

TEST(Decide, ThresholdAndTopKTogether) {
  // The K most confident of the classes reaching T.
  EXPECT_EQ(decide({0.6f, 0.8f, 0.7f, 0.9f}, {1, 1, 1, 1}, 0.65, 2), (V{3, 1}));
  EXPECT_EQ(decide({0.6f, 0.8f, 0.7f, 0.9f}, {1, 1, 1, 1}, 0.85, 3), (V{3}));
}

}  // namespace
