// Every exception the SDK throws derives from der::Error; what() is one line that names the file and the fix,
// worded like the Python runtime's der_deploy.errors.
#pragma once

#include <stdexcept>
#include <string>

#include "der/export.h"

namespace der {

class DER_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A model card that is malformed, or that this SDK cannot honour (never approximated).
class DER_API CardError : public Error {
 public:
  using Error::Error;
};

// An image that cannot be decoded; what() is "<path>: <reason>", as str(ImageError) in Python.
class DER_API ImageError : public Error {
 public:
  ImageError(const std::string& path, const std::string& reason)
      : Error(path + ": " + reason), path_(path), reason_(reason) {}
  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_;
  std::string reason_;
};

// An engine file (.onnx / .plan + sidecar) that is missing, corrupt, or built for another machine.
class DER_API EngineError : public Error {
 public:
  using Error::Error;
};

// An optional backend (TensorRT, the CUDA execution provider) that is not built in or has no device.
class DER_API BackendUnavailable : public Error {
 public:
  using Error::Error;
};

}  // namespace der
