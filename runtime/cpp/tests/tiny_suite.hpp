// What the Predictor, OpenVINO and options suites share: one tiny model (onnx_model.hpp) written in its variants
// (scores, logits, a fixed batch of 2, no card, not ONNX at all), its independent reference, random batches, and
// what_of for asserting on error texts.
#pragma once

#include <cmath>
#include <cstddef>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "der/error.hpp"
#include "onnx_model.hpp"

namespace dertest {

// 4 classes at 8x8; the weights let every class win on some input.
inline TinyModel standard_model() {
  TinyModel m;
  m.classes = 4;
  m.height = 8;
  m.width = 8;
  m.weight = {1.5f, -2.0f, 0.5f, 3.0f, 0.25f, 1.0f, -1.0f, -3.0f, 2.0f, 0.5f, 1.0f, 0.1f};
  m.bias = {0.1f, -0.2f, 0.0f, 0.3f};
  m.card = tiny_card(m.classes, m.height, m.width);
  return m;
}

// dir/scores.onnx, logits.onnx, fixed.onnx, nocard.onnx and garbage.onnx.
inline void write_variants(const TinyModel& m, const std::string& dir) {
  m.write(dir + "/scores.onnx");
  auto logits = m;
  logits.scores = false;
  logits.write(dir + "/logits.onnx");
  auto fixed = m;
  fixed.batch = 2;
  fixed.write(dir + "/fixed.onnx");
  auto nocard = m;
  nocard.card = "";
  nocard.write(dir + "/nocard.onnx");
  std::ofstream(dir + "/garbage.onnx") << "this is not a protobuf";
}

// Independent reference: plane means in double, then the linear layer and the logistic function.
inline std::vector<double> reference(const TinyModel& m, const float* chw) {
  const int hw = m.height * m.width;
  double mean[3] = {0, 0, 0};
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < hw; ++i) mean[k] += chw[k * hw + i];
    mean[k] /= hw;
  }
  std::vector<double> p(static_cast<std::size_t>(m.classes));
  for (int c = 0; c < m.classes; ++c) {
    double z = m.bias[static_cast<std::size_t>(c)];
    for (int k = 0; k < 3; ++k) z += mean[k] * m.weight[static_cast<std::size_t>(k * m.classes + c)];
    p[static_cast<std::size_t>(c)] = 1.0 / (1.0 + std::exp(-z));
  }
  return p;
}

// n preprocessed images of the model's size, N(0, 1) values.
inline std::vector<float> random_batch(const TinyModel& m, std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n * 3 * static_cast<std::size_t>(m.height * m.width));
  for (auto& v : x) v = dist(rng);
  return x;
}

// The message of the der::Error fn throws, "" when it throws none.
inline std::string what_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const der::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace dertest
