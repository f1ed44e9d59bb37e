// der-infer-cpp output: atomic -o files and the jsonl/json/csv writers of der-infer.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "der/predictor.hpp"

namespace derinfer {

struct Interrupted {};

// der_deploy.fileio.check_writable: fail before any work when the output cannot be created (der::Error).
void check_writable(const std::string& path);

// stdout, or a temp file beside `path` that replaces it only on commit() (deleted otherwise).
class Output {
 public:
  explicit Output(const std::string& path);
  ~Output();
  std::FILE* stream() const { return file_; }
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
};

class Writer {
 public:
  Writer(std::string format, std::FILE* out, std::vector<std::string> classes);
  void add(const der::Prediction& p);
  void finish();

 private:
  std::string format_;
  std::FILE* out_;
  std::vector<std::string> classes_;
  std::size_t count_ = 0;
};

std::string error_line(const der::Prediction& p);  // the error with its path as path text
std::string describe(const der::Stats& s);          // der_deploy.runtime.pipeline.describe
std::string one_line(const std::string& message);   // first line, as valid UTF-8 text

}  // namespace derinfer
