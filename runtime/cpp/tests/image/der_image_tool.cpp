// Test driver for the image layer (used by tests/cpp/test_image_parity.py):
//   der_image_tool decode IN OUT.raw                    -> "W H\n" + RGB8 bytes, or "error: <msg>", exit 1
//   der_image_tool resize IN.raw W H INTERP OUT.raw     -> the same raw format
//   der_image_tool preprocess IN H W INTERP OUT.f32     -> load_and_preprocess (ImageNet mean/std), float32 CHW
//   der_image_tool bench DIR H W [REPEAT] [INTERP]      -> load_and_preprocess every file, one thread, img/s
// Options anywhere after the command (der_deploy.images' draft and max_pixels): --draft W H (decode: the
// shrink-on-load target; preprocess and bench: --draft alone, the target is their H W), --max-pixels N.
#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "der/error.hpp"
#include "der/image.hpp"

namespace {

const double kMean[3] = {0.485, 0.456, 0.406};
const double kStd[3] = {0.229, 0.224, 0.225};

void write_file(const std::string& path, const std::string& header, const void* data, std::size_t n) {
  const std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary);
  f << header;
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  f.close();
  if (!f || std::rename(tmp.c_str(), path.c_str()) != 0) throw der::Error(path + ": cannot write output");
}

void write_raw(const std::string& path, const der::Bitmap& b) {
  write_file(path, std::to_string(b.width) + " " + std::to_string(b.height) + "\n", b.pixels.data(),
             b.pixels.size());
}

der::Bitmap read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  der::Bitmap b;
  if (!(f >> b.width >> b.height) || f.get() != '\n') throw der::Error(path + ": not a 'W H\\n' + RGB raw file");
  b.pixels.resize(static_cast<std::size_t>(b.width) * b.height * 3);
  f.read(reinterpret_cast<char*>(b.pixels.data()), static_cast<std::streamsize>(b.pixels.size()));
  if (!f) throw der::Error(path + ": raw file is shorter than its header says");
  return b;
}

int usage() {
  std::cerr << "usage: der_image_tool decode IN OUT.raw | resize IN.raw W H INTERP OUT.raw | "
               "preprocess IN H W INTERP OUT.f32 | bench DIR H W [REPEAT] [INTERP]\n";
  return 2;
}

int bench(const std::string& dir, int h, int w, int repeat, der::Interpolation interp, der::DecodeOptions opts) {
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
    closedir(d);
  } else {
    throw der::Error(dir + ": cannot open folder");
  }
  std::sort(files.begin(), files.end());
  std::vector<float> out(static_cast<std::size_t>(3) * h * w);
  std::size_t done = 0, failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  for (int r = 0; r < repeat; ++r)
    for (const auto& f : files) {
      try {
        der::load_and_preprocess(f, h, w, interp, kMean, kStd, false, out.data(), opts);
        ++done;
      } catch (const der::ImageError&) {
        ++failed;
      }
    }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  // CPU time too: on a shared machine it is the steadier per-core figure.
  std::printf("images=%zu failed=%zu seconds=%.3f img_per_s=%.1f cpu_seconds=%.3f img_per_cpu_s=%.1f\n", done,
              failed, s, done / s, cpu, done / cpu);
  return 0;
}

}  // namespace

int main(int argc, char** raw_argv) {
  // Take the options out, leaving the positional arguments in argv.
  std::vector<char*> args;
  der::DecodeOptions opts;
  bool draft = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = raw_argv[i];
    if (a == "--max-pixels" && i + 1 < argc) {
      opts.max_pixels = std::atoll(raw_argv[++i]);
    } else if (a == "--draft") {
      draft = true;
      if (i + 2 < argc && std::atoi(raw_argv[i + 1]) > 0 && std::atoi(raw_argv[i + 2]) > 0) {
        opts.draft_width = std::atoi(raw_argv[++i]);
        opts.draft_height = std::atoi(raw_argv[++i]);
      }
    } else {
      args.push_back(raw_argv[i]);
    }
  }
  argc = static_cast<int>(args.size());
  char** argv = args.data();
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  try {
    if (cmd == "decode" && argc == 4) {
      write_raw(argv[3], der::decode_file(argv[2], opts));
    } else if (cmd == "resize" && argc == 7) {
      const der::Bitmap src = read_raw(argv[2]);
      write_raw(argv[6], der::resize(src.view(), std::atoi(argv[3]), std::atoi(argv[4]),
                                     der::parse_interpolation(argv[5])));
    } else if (cmd == "preprocess" && argc == 7) {
      const int h = std::atoi(argv[3]), w = std::atoi(argv[4]);
      if (draft) opts.draft_width = w, opts.draft_height = h;
      std::vector<float> out(static_cast<std::size_t>(3) * h * w);
      // Both paths must give load_and_preprocess's tensor: the one-call API and decode_file + preprocess.
      der::load_and_preprocess(argv[2], h, w, der::parse_interpolation(argv[5]), kMean, kStd, false, out.data(), opts);
      const der::Bitmap b = der::decode_file(argv[2], opts);
      std::vector<float> two(out.size());
      der::preprocess(b.view(), h, w, der::parse_interpolation(argv[5]), kMean, kStd, false, two.data());
      if (two != out) throw der::Error(std::string(argv[2]) + ": load_and_preprocess differs from decode_file + preprocess");
      write_file(argv[6], "", out.data(), out.size() * sizeof(float));
    } else if (cmd == "bench" && (argc >= 5 && argc <= 7)) {
      if (draft && opts.draft_width == 0) opts.draft_width = std::atoi(argv[4]), opts.draft_height = std::atoi(argv[3]);
      return bench(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc >= 6 ? std::atoi(argv[5]) : 1,
                   der::parse_interpolation(argc >= 7 ? argv[6] : "bilinear"), opts);
    } else {
      return usage();
    }
  } catch (const der::Error& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
