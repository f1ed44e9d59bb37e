// der-infer's records: numbers written exactly as Python's json.dumps(float(np.float32(x))).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "der/record.hpp"

namespace {

TEST(Record, FloatsAsPythonRepr) {
  // Expected strings are Python 3.11's repr(float(np.float32(x))).
  EXPECT_EQ(der::json_number(0.17791727f), "0.1779172718524933");
  EXPECT_EQ(der::json_number(0.5f), "0.5");
  EXPECT_EQ(der::json_number(1.0f), "1.0");
  EXPECT_EQ(der::json_number(0.0f), "0.0");
  EXPECT_EQ(der::json_number(-2.0f), "-2.0");
  EXPECT_EQ(der::json_number(0.0001f), "9.999999747378752e-05");
  EXPECT_EQ(der::json_number(0.00048828125f), "0.00048828125");
  EXPECT_EQ(der::json_number(1e-5f), "9.999999747378752e-06");
  EXPECT_EQ(der::json_number(3.0517578125e-05f), "3.0517578125e-05");
  EXPECT_EQ(der::json_number(123456.0f), "123456.0");
  EXPECT_EQ(der::json_number(1e16f), "1.0000000272564224e+16");
  EXPECT_EQ(der::json_number(1e15f), "999999986991104.0");
  EXPECT_EQ(der::json_number(std::numeric_limits<float>::denorm_min()), "1.401298464324817e-45");
  EXPECT_EQ(der::json_number(std::nanf("")), "NaN");
  EXPECT_EQ(der::json_number(std::numeric_limits<float>::infinity()), "Infinity");
}

TEST(Record, RecordsUsePythonSeparatorsAndPathText) {
  der::Prediction ok;
  ok.path = "a\\b\xff.jpg";
  ok.labels = {"cat"};
  ok.scores = {{"cat", 0.75f}, {"d\xc3\xb6g", 0.25f}};
  EXPECT_EQ(der::record_json(ok, true),
            "{\"path\": \"a\\\\\\\\b\\\\xff.jpg\", \"labels\": [\"cat\"], \"scores\": {\"cat\": 0.75, \"d\\u00f6g\": 0.25}}");
  der::Prediction bad;
  bad.path = "x\xfe.png";
  bad.error = "x\xfe.png: file not found";
  EXPECT_EQ(der::record_json(bad, true), "{\"path\": \"x\\\\xfe.png\", \"error\": \"x\\\\xfe.png: file not found\"}");
}

}  // namespace
