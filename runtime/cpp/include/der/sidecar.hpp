// The "<plan>.json" sidecar of a TensorRT plan (runtime/sidecar.py): model card, TensorRT version, GPU,
// optimisation profiles; validated like Sidecar.from_dict, with the same compatibility rules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "der/card.hpp"
#include "der/export.h"

namespace der {

struct Profile {
  std::string input;
  std::vector<std::int64_t> min, opt, max;
};

struct DER_API Sidecar {
  Card card;
  std::string onnx_name, onnx_sha256, plan_sha256, tensorrt_version, gpu_name, compute_capability, precision;
  std::vector<Profile> profiles;
  const Profile* profile_for(const std::string& input) const;

  // EngineError naming `where` and "rebuild the plan with der-export --trt" for any problem.
  static Sidecar from_json(const std::string& text, const std::string& where);
};

DER_API std::string sidecar_path(const std::string& plan_path);  // der.plan -> der.plan.json
DER_API Sidecar read_sidecar(const std::string& plan_path);  // EngineError when missing or malformed

// EngineError ("... rebuild it from the ONNX: der-export <onnx> --trt") for another TensorRT version or compute
// capability; returns warnings (another GPU model with the same compute capability).
DER_API std::vector<std::string> check_compatible(const Sidecar& sidecar, const std::string& trt_version,
                                                  const std::string& gpu_name,
                                                  const std::string& compute_capability,
                                                  const std::string& plan_path);

}  // namespace der
