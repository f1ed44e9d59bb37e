// der-infer-cpp: the C++ twin of der-infer (der_deploy/cli/infer.py) -- same records, folder walk and exit codes.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>

#include "der/paths.hpp"
#include "der/predictor.hpp"
#include "der/runner.hpp"
#include "der/sidecar.hpp"
#include "output.hpp"

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

const char* kHelp =
    "Usage: der-infer-cpp --engine FILE [OPTIONS] PATH...\n"
    "\n"
    "  Classify images (files or folders, walked recursively) with a DER engine; the C++ twin of der-infer.\n"
    "  Unreadable images are reported on stderr and skipped; the exit code is 0 unless --strict.\n"
    "\n"
    "Options:\n"
    "  --engine FILE              Model file: .onnx (ONNX Runtime) or .plan/.engine (TensorRT) from der-export.\n"
    "  --batch-size N             Images per engine call.  [default: 8]\n"
    "  --threshold T              One threshold for every class (default: the card's per-class thresholds).\n"
    "  --top-k K                  The K highest-scoring labels, whatever their score.\n"
    "  --format [jsonl|json|csv]  Default: from -o's suffix (.json, .jsonl, .csv), else jsonl. Paths that are not\n"
    "                             UTF-8 are written losslessly: invalid bytes as \\xNN, backslashes doubled.\n"
    "  -o, --output FILE          Write here (atomically) instead of stdout.\n"
    "  --strict                   Exit 1 if any image could not be read.\n"
    "  --backend [auto|ort|trt|openvino]\n"
    "                             [default: auto: ONNX Runtime for .onnx, TensorRT for .plan]\n"
    "  --precision [fp32|bf16|fp16]\n"
    "                             OpenVINO inference precision (default fp32); one this CPU lacks natively is an\n"
    "                             error, never a silent FP32 run.\n"
    "  --mode [latency|throughput]\n"
    "                             OpenVINO performance hint: latency (one infer request) or throughput (each batch\n"
    "                             split over OpenVINO's optimal number of requests, run at once).  [default: latency]\n"
    "  --cache-dir DIR            OpenVINO compiled-model cache (created if missing): later opens load the compiled\n"
    "                             model instead of compiling it.  [default: $DER_OV_CACHE_DIR, else none]\n"
    "  --providers LIST           ONNX Runtime providers in priority order: cpu or cuda,cpu (default cpu).\n"
    "  --device N                 GPU index for TensorRT and ONNX Runtime's CUDA provider.  [default: 0]\n"
    "  --threads N                ONNX Runtime intra-op / OpenVINO inference threads (default: the runtime's).\n"
    "  --workers N                Decode threads (default: up to 4; 0 decodes inline).\n"
    "  --max-pixels N             Refuse (error record) images above N decoded pixels, from their header; 0: only\n"
    "                             the decompression-bomb limit.  [default: 40000000]\n"
    "  -h, --help                 Show this message and exit.\n"
    "\n"
    "Exit codes: 0 ok; 1 --strict and a file failed; 2 usage or engine error; 130 interrupted.\n";

struct UsageError {
  std::string message;
};

struct Args {
  std::string engine;
  std::vector<std::string> paths;
  int batch_size = 8;
  std::optional<double> threshold;
  std::optional<int> top_k;
  std::string format;  // "" = from -o's suffix
  std::string output;
  bool strict = false;
  std::string backend = "auto";
  std::string precision;  // "" = fp32 (OpenVINO only)
  std::string mode = "latency";          // OpenVINO only
  std::optional<std::string> cache_dir;  // OpenVINO only; unset: $DER_OV_CACHE_DIR as der-infer
  int device = 0;
  std::optional<std::string> providers;
  int threads = 0;
  int workers = -1;
  long long max_pixels = der::kDefaultMaxPixels;
};

long parse_int(const std::string& opt, const std::string& text, long lo) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end || errno) throw UsageError{"invalid value for " + opt + ": '" + text + "' is not a valid integer"};
  if (v < lo || v > 1000000000L)
    throw UsageError{"invalid value for " + opt + ": " + text + " is not in the range x>=" + std::to_string(lo)};
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  bool have_engine = false, options_done = false, mode_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      a.paths.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg, value;
    bool inline_value = false;
    auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    auto need = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= argc) throw UsageError{"option " + name + " requires an argument"};
      return argv[++i];
    };
    if (name == "-h" || name == "--help") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (name == "--engine") {
      a.engine = need();
      have_engine = true;
    } else if (name == "--batch-size") {
      a.batch_size = static_cast<int>(parse_int(name, need(), 1));
    } else if (name == "--threshold") {
      std::string t = need();
      char* end = nullptr;
      double v = std::strtod(t.c_str(), &end);
      if (t.empty() || *end) throw UsageError{"invalid value for --threshold: '" + t + "' is not a valid float"};
      if (!(v >= 0.0 && v <= 1.0))
        throw UsageError{"invalid value for --threshold: " + t + " is not in the range 0.0<=x<=1.0"};
      a.threshold = v;
    } else if (name == "--top-k") {
      a.top_k = static_cast<int>(parse_int(name, need(), 1));
    } else if (name == "--format") {
      a.format = need();
      if (a.format != "jsonl" && a.format != "json" && a.format != "csv")
        throw UsageError{"invalid value for --format: '" + a.format + "' is not one of 'jsonl', 'json', 'csv'"};
    } else if (name == "-o" || name == "--output") {
      a.output = need();
    } else if (name == "--strict") {
      a.strict = true;
    } else if (name == "--backend") {
      a.backend = need();
      if (a.backend != "auto" && a.backend != "ort" && a.backend != "trt" && a.backend != "openvino")
        throw UsageError{"invalid value for --backend: '" + a.backend +
                         "' is not one of 'auto', 'ort', 'trt', 'openvino'"};
    } else if (name == "--precision") {
      a.precision = need();
      if (a.precision != "fp32" && a.precision != "bf16" && a.precision != "fp16")
        throw UsageError{"invalid value for --precision: '" + a.precision + "' is not one of 'fp32', 'bf16', 'fp16'"};
    } else if (name == "--mode") {
      a.mode = need();
      if (a.mode != "latency" && a.mode != "throughput")
        throw UsageError{"invalid value for --mode: '" + a.mode + "' is not one of 'latency', 'throughput'"};
      mode_given = true;
    } else if (name == "--cache-dir") {
      a.cache_dir = need();
    } else if (name == "--device") {
      a.device = static_cast<int>(parse_int(name, need(), 0));
    } else if (name == "--providers") {
      a.providers = need();
    } else if (name == "--threads") {
      a.threads = static_cast<int>(parse_int(name, need(), 1));
    } else if (name == "--workers") {
      a.workers = static_cast<int>(parse_int(name, need(), 0));
    } else if (name == "--max-pixels") {
      a.max_pixels = parse_int(name, need(), 0);
    } else {
      throw UsageError{"no such option: " + name + " (see der-infer-cpp --help)"};
    }
  }
  if (!have_engine) throw UsageError{"missing option '--engine'"};
  if (a.paths.empty()) throw UsageError{"missing argument 'PATH...'"};
  if (a.threshold && a.top_k) throw UsageError{"--threshold and --top-k are mutually exclusive; give one of them"};
  if (!a.precision.empty() && a.backend != "openvino")
    throw UsageError{"--precision applies to --backend openvino only"};
  if (mode_given && a.backend != "openvino") throw UsageError{"--mode applies to --backend openvino only"};
  if (a.cache_dir && a.backend != "openvino") throw UsageError{"--cache-dir applies to --backend openvino only"};
  if (!a.cache_dir && a.backend == "openvino") {
    const char* env = std::getenv("DER_OV_CACHE_DIR");  // der-infer's default (backends/openvino/runner.py)
    if (env && *env) a.cache_dir = env;
  }
  return a;
}

// --format if given; else from -o's suffix as der-infer does (output_format); jsonl on stdout.
std::string infer_format(const Args& a) {
  if (!a.format.empty()) return a.format;
  if (a.output.empty()) return "jsonl";
  const std::string name = der::normalize_path(a.output).substr(der::normalize_path(a.output).find_last_of('/') + 1);
  const auto dot = name.rfind('.');
  std::string suffix = (dot == std::string::npos || dot == 0 || dot + 1 == name.size()) ? "" : name.substr(dot);
  for (auto& ch : suffix)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  if (suffix == ".json") return "json";
  if (suffix == ".jsonl" || suffix == ".ndjson") return "jsonl";
  if (suffix == ".csv") return "csv";
  throw UsageError{"cannot tell the format from " + der::path_text(name) +
                   ": name it .json, .jsonl or .csv, or pass --format (jsonl, json, csv)"};
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::size_t i = 0;
  for (;;) {
    auto j = text.find(sep, i);
    out.push_back(text.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) return out;
    i = j + 1;
  }
}

int run(const Args& a) {
  const std::string format = infer_format(a);
  if (!a.output.empty()) derinfer::check_writable(a.output);
  if (a.providers && a.backend != "ort" && der::engine_kind(a.engine) == "tensorrt") {
    der::read_sidecar(a.engine);  // der-infer reads the card first: its errors come before this one
    throw der::EngineError(a.engine + ": --providers applies to ONNX Runtime only; a TensorRT engine always runs on "
                           "its GPU");
  }
  der::Options opts;
  opts.backend = a.backend;
  opts.precision = a.precision;
  opts.mode = a.mode;
  opts.cache_dir = a.cache_dir.value_or("");
  opts.device = a.device;
  if (a.providers) opts.providers = split(*a.providers, ',');
  opts.intra_op_threads = a.threads;
  opts.batch_size = a.batch_size;
  opts.decode_threads = a.workers;
  opts.max_pixels = a.max_pixels;
  der::Predictor pred(a.engine, opts);
  const der::Card& card = pred.card();
  if (a.top_k && static_cast<std::size_t>(*a.top_k) > card.num_classes())
    throw UsageError{"invalid value for --top-k: " + std::to_string(*a.top_k) + " exceeds the model's " +
                     std::to_string(card.num_classes()) + " classes"};
  const der::FoundImages found = der::find_images(a.paths);
  if (found.paths.empty()) {
    std::string where, exts;
    for (const auto& p : a.paths) where += (where.empty() ? "" : ", ") + der::path_text(der::normalize_path(p));
    auto sorted = der::image_extensions();
    std::sort(sorted.begin(), sorted.end());
    for (const auto& e : sorted) exts += (exts.empty() ? "" : ", ") + e;
    const std::string skipped = found.skipped_total() ? "; " + found.describe_skipped() : "";
    throw der::Error("no image files found in " + where + " (folders are searched recursively for " + exts + ")" +
                     skipped);
  }
  der::Rule rule{a.threshold, a.top_k};
  std::size_t failed = 0;
  der::Stats stats;
  {
    derinfer::Output out(a.output);
    derinfer::Writer writer(format, out.stream(), card.classes);
    pred.predict_stream(found.paths, rule, [&](der::Prediction&& p) {
      if (!p.ok()) {
        ++failed;
        std::fprintf(stderr, "skipped %s\n", derinfer::error_line(p).c_str());
      }
      writer.add(p);
      return !g_interrupted.load();
    }, &stats);
    if (g_interrupted) throw derinfer::Interrupted{};
    writer.finish();
    out.commit();
  }
  if (failed)
    std::fprintf(stderr, "%zu of %zu images could not be read and were skipped%s\n", failed, found.paths.size(),
                 a.strict ? " (--strict: exit 1)" : "");
  // The summary line also counts what the folder walk skipped (dangling symlinks, FIFOs, ...), as der-infer's.
  const std::string skipped = found.skipped_total() ? "; " + found.describe_skipped() : "";
  std::string line = derinfer::describe(stats);
  const std::string marker = " img/s engine-only";  // "... engine-only on OpenVINO 2026.4 CPU bf16 (...)", as der-infer
  if (a.backend == "openvino" && line.find(marker) != std::string::npos)
    line.insert(line.find(marker) + marker.size(), " on " + pred.backend_description());
  std::fprintf(stderr, "%s%s\n", line.c_str(), skipped.c_str());
  return failed && a.strict ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_sigint);
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.message.c_str());
    return 2;
  } catch (const derinfer::Interrupted&) {
    std::fprintf(stderr, "interrupted\n");
    return 130;
  } catch (const der::Error& e) {
    std::fprintf(stderr, "error: %s\n", derinfer::one_line(e.what()).c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal error (%s); please report it\n", e.what());
    return 2;
  }
}
