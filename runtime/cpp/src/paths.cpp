// find_images and path text, mirroring der_deploy.images.find_images (Python 3.11 pathlib.rglob semantics).
#include "der/paths.hpp"

#include <algorithm>
#include <cstdint>
#include <dirent.h>
#include <set>
#include <sys/stat.h>

#include "der/error.hpp"

namespace der {
namespace {

// Length of the valid UTF-8 sequence at s[i] (strict: no overlongs, surrogates or code points > U+10FFFF), 0 if none.
std::size_t utf8_len(const std::string& s, std::size_t i, std::uint32_t* cp) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) { *cp = c; return 1; }
  std::size_t n;
  std::uint32_t v, lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; v = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; v = c & 0x0F; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; v = c & 0x07; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const unsigned char t = b(i + k);
    if (t < (k == 1 ? lo : 0x80) || t > (k == 1 ? hi : 0xBF)) return 0;
    v = (v << 6) | (t & 0x3F);
  }
  *cp = v;
  return n;
}

// Code points as Python's os.fsdecode gives them (surrogateescape for undecodable bytes).
std::vector<std::uint32_t> code_points(const std::string& s) {
  std::vector<std::uint32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t cp;
    std::size_t n = utf8_len(s, i, &cp);
    if (n == 0) { out.push_back(0xDC00 + static_cast<unsigned char>(s[i])); n = 1; }
    else out.push_back(cp);
    i += n;
  }
  return out;
}

std::vector<std::string> parts(const std::string& path) {
  std::vector<std::string> out;
  const std::string norm = normalize_path(path);
  std::size_t i = 0;
  if (!norm.empty() && norm[0] == '/') {
    i = (norm.size() > 1 && norm[1] == '/') ? 2 : 1;
    out.push_back(norm.substr(0, i));
  }
  while (i < norm.size()) {
    std::size_t j = norm.find('/', i);
    if (j == std::string::npos) j = norm.size();
    out.push_back(norm.substr(i, j - i));
    i = j + 1;
  }
  if (out.size() == 1 && out[0] == ".") out.clear();
  return out;
}

std::string lower_suffix(const std::string& name) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == name.size()) return "";
  std::string s = name.substr(dot);
  for (auto& ch : s)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  return s;
}

bool is_image_name(const std::string& name) {
  const auto& ext = image_extensions();
  return std::find(ext.begin(), ext.end(), lower_suffix(name)) != ext.end();
}

std::string join(const std::string& dir, const std::string& name) {
  return dir == "." ? name : (dir.back() == '/' ? dir + name : dir + "/" + name);
}

// rglob("*") of Python 3.11: every entry of every folder, recursing into real folders (not symlinked ones);
// hidden names are dropped here (the Python filter drops any path with a hidden part anyway).
void walk(const std::string& dir, std::vector<std::string>& hits, std::map<std::string, std::size_t>& skipped) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;  // pathlib ignores folders it may not list
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == ".." || name[0] == '.') continue;
    names.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : names) {
    const std::string p = join(dir, name);
    struct stat lst {}, st {};
    if (::lstat(p.c_str(), &lst) != 0) continue;
    const bool target_ok = ::stat(p.c_str(), &st) == 0;
    if (S_ISDIR(lst.st_mode)) {
      walk(p, hits, skipped);
      continue;
    }
    if (!is_image_name(name)) continue;
    if (!target_ok) ++skipped["dangling symlink"];  // or a symlink loop; nothing is opened
    else if (S_ISREG(st.st_mode)) hits.push_back(p);
    else if (!S_ISDIR(st.st_mode)) ++skipped[file_kind(st.st_mode)];
  }
}

}  // namespace

std::string file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "folder";
  if (S_ISFIFO(mode)) return "FIFO";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  return "special file";
}

std::size_t FoundImages::skipped_total() const {
  std::size_t n = 0;
  for (const auto& kv : skipped) n += kv.second;
  return n;
}

std::string FoundImages::describe_skipped() const {
  static const char* order[] = {"dangling symlink", "FIFO", "socket", "character device", "block device"};
  std::vector<std::pair<std::size_t, std::string>> kinds;  // (rank, kind): known kinds first, then by name
  for (const auto& kv : skipped) {
    std::size_t rank = 5;
    for (std::size_t i = 0; i < 5; ++i)
      if (kv.first == order[i]) rank = i;
    if (kv.second) kinds.emplace_back(rank, kv.first);
  }
  std::sort(kinds.begin(), kinds.end());
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "" : ", ") + std::to_string(skipped.at(k.second)) + " " + k.second;
  return out.empty() ? "" : "skipped in folders: " + out;
}

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> ext = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif",
                                               ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"};
  return ext;
}

std::string normalize_path(const std::string& path) {
  std::string root;
  std::size_t lead = 0;
  while (lead < path.size() && path[lead] == '/') ++lead;
  if (lead == 2) root = "//";  // POSIX leaves exactly two leading slashes implementation-defined; pathlib keeps them
  else if (lead > 0) root = "/";
  std::string out = root;
  std::size_t i = lead;
  bool first = true;
  while (i < path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    const std::string part = path.substr(i, j - i);
    if (!part.empty() && part != ".") {
      if (!first) out += '/';
      out += part;
      first = false;
    }
    i = j + 1;
  }
  return out.empty() ? "." : out;
}

std::string path_text(const std::string& path) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(path.size());
  for (std::size_t i = 0; i < path.size();) {
    std::uint32_t cp;
    const std::size_t n = utf8_len(path, i, &cp);
    if (n == 0) {
      const unsigned char c = static_cast<unsigned char>(path[i]);
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
      i += 1;
    } else if (cp == '\\') {
      out += "\\\\";
      i += 1;
    } else {
      out.append(path, i, n);
      i += n;
    }
  }
  return out;
}

bool path_less(const std::string& a, const std::string& b) {
  const auto pa = parts(a), pb = parts(b);
  const std::size_t n = std::min(pa.size(), pb.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (pa[i] == pb[i]) continue;
    return code_points(pa[i]) < code_points(pb[i]);
  }
  return pa.size() < pb.size();
}

FoundImages find_images(const std::vector<std::string>& paths) {
  FoundImages found;
  std::set<std::string> seen;
  auto add = [&](const std::string& p) {
    if (seen.insert(p).second) found.paths.push_back(p);
  };
  for (const auto& raw : paths) {
    const std::string root = normalize_path(raw);
    struct stat st {};
    const bool exists = ::stat(root.c_str(), &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
      std::vector<std::string> hits;
      walk(root, hits, found.skipped);
      std::sort(hits.begin(), hits.end(), path_less);
      for (const auto& h : hits) add(h);
    } else if (exists) {
      add(root);
    } else {
      throw ImageError(root, "no such file or folder; check the path");
    }
  }
  return found;
}

}  // namespace der
