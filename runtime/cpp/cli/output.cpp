#include "output.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "der/error.hpp"
#include "der/paths.hpp"
#include "der/record.hpp"

namespace derinfer {
namespace {

std::string parent_of(const std::string& path) {
  const std::string norm = der::normalize_path(path);
  auto slash = norm.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : norm.substr(0, slash);
}

std::string name_of(const std::string& path) {
  const std::string norm = der::normalize_path(path);
  auto slash = norm.find_last_of('/');
  return slash == std::string::npos ? norm : norm.substr(slash + 1);
}

void make_dirs(const std::string& dir) {
  struct stat st {};
  if (dir.empty() || ::stat(dir.c_str(), &st) == 0) return;
  make_dirs(parent_of(dir));
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) throw errno;
}

// RFC 4180 quoting as Python's csv module (QUOTE_MINIMAL) does it.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void put(std::FILE* f, const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), f) != s.size()) throw der::Error(std::string("cannot write output (") + std::strerror(errno) + ")");
}

}  // namespace

void check_writable(const std::string& path) {
  const std::string text = der::path_text(der::normalize_path(path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw der::Error(text + ": is a folder; give a file name for the output");
  const std::string parent = parent_of(path);
  try {
    make_dirs(parent);
  } catch (int err) {
    throw der::Error(text + ": cannot create folder " + der::path_text(parent) + " (" + std::strerror(err) +
                     "); choose another output path");
  }
  if (::access(parent.c_str(), W_OK) != 0)
    throw der::Error(text + ": folder " + der::path_text(parent) + " is not writable; choose another output path with -o");
}

Output::Output(const std::string& path) : path_(path) {
  if (path.empty()) {
    file_ = stdout;
    return;
  }
  check_writable(path);
  std::string tmpl = parent_of(path) + "/." + name_of(path) + ".XXXXXX.tmp";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = ::mkstemps(buf.data(), 4);
  if (fd < 0) throw der::Error(der::path_text(path) + ": cannot create a temporary file (" + std::strerror(errno) + ")");
  tmp_ = buf.data();
  mode_t mask = ::umask(0);  // mkstemp makes 0600; give the output the permissions a plain open() would
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  file_ = ::fdopen(fd, "w");
}

Output::~Output() {
  if (file_ && file_ != stdout) std::fclose(file_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void Output::commit() {
  if (file_ == stdout) {
    std::fflush(stdout);
    return;
  }
  const bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  std::fclose(file_);
  file_ = nullptr;
  if (!ok || ::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw der::Error(der::path_text(path_) + ": cannot write (" + std::strerror(errno) + "); choose another output path");
  tmp_.clear();
}

Writer::Writer(std::string format, std::FILE* out, std::vector<std::string> classes)
    : format_(std::move(format)), out_(out), classes_(std::move(classes)) {
  if (format_ == "csv") {
    std::string header = "path,labels";
    for (const auto& c : classes_) header += "," + csv_field(c);
    put(out_, header + ",error\n");
  } else if (format_ == "json") {
    put(out_, "[");
  }
}

void Writer::add(const der::Prediction& p) {
  if (format_ == "jsonl") {
    put(out_, der::record_json(p, true) + "\n");
  } else if (format_ == "json") {
    put(out_, std::string(count_ ? "," : "") + "\n  " + der::record_json(p, true));
  } else {
    std::string row = csv_field(der::path_text(p.path));
    if (!p.ok()) {
      row += ",";
      for (std::size_t i = 0; i < classes_.size(); ++i) row += ",";
      row += "," + csv_field(der::error_text(p));
    } else {
      std::string labels;
      for (std::size_t i = 0; i < p.labels.size(); ++i) labels += (i ? ";" : "") + p.labels[i];
      row += "," + csv_field(labels);
      char num[64];
      for (const auto& s : p.scores) {
        std::snprintf(num, sizeof num, "%.6f", static_cast<double>(s.second));
        row += "," + std::string(num);
      }
      row += ",";
    }
    put(out_, row + "\n");
  }
  ++count_;
}

void Writer::finish() {
  if (format_ == "json") put(out_, count_ ? "\n]\n" : "]\n");
}

std::string error_line(const der::Prediction& p) { return der::error_text(p); }

std::string describe(const der::Stats& s) {
  auto rate = [](double n, double t) { return t > 0 ? n / t : std::nan(""); };
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%zu images in %.2f s: %.1f img/s end-to-end, %.1f img/s engine-only (%s, %d workers, batch %d, "
                "waited %.2f s on decoding)",
                s.images, s.wall_s, rate(static_cast<double>(s.images), s.wall_s),
                rate(static_cast<double>(s.images), s.engine_s), s.workers ? "thread" : "inline", s.workers,
                s.batch_size, s.wait_s);
  return buf;
}

std::string one_line(const std::string& message) { return der::path_text(message.substr(0, message.find('\n'))); }

}  // namespace derinfer
