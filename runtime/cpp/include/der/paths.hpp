// Finding images and writing paths, as der_deploy.images.find_images and der_deploy's path text do.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "der/export.h"

namespace der {

// The suffixes a folder walk keeps (compared case-insensitively): der_deploy.images.IMAGE_EXTENSIONS.
DER_API const std::vector<std::string>& image_extensions();

// A path spelled as Python's pathlib prints it: repeated and trailing slashes and "." parts dropped
// ("./a//b/" -> "a/b"; "" -> ".").
DER_API std::string normalize_path(const std::string& path);

// The path's bytes as UTF-8 text for every output format: valid UTF-8 as is, every "\" written as "\\",
// every byte outside valid UTF-8 as "\xNN" (lowercase hex). Lossless, and always valid UTF-8 / strict JSON.
DER_API std::string path_text(const std::string& path);

// Python's ordering of pathlib paths: by parts, each part by code points with undecodable bytes read as
// U+DC80..U+DCFF (surrogateescape) -- not plain byte order.
DER_API bool path_less(const std::string& a, const std::string& b);

struct DER_API FoundImages {
  std::vector<std::string> paths;                // normalised, in order, de-duplicated
  std::map<std::string, std::size_t> skipped;  // folder entries skipped, by kind: "dangling symlink", "FIFO", ...
  std::size_t skipped_total() const;
  // "skipped in folders: 1 dangling symlink, 2 FIFO" (ImageScan.describe_skipped), or "" when none.
  std::string describe_skipped() const;
};

// What a non-regular st_mode is, in words: "folder", "FIFO", "socket", "character device", "block device".
DER_API std::string file_kind(unsigned mode);

// Expand files and folders exactly as der_deploy.images.scan_images (its docstring lists the rules): explicit
// paths are kept (in the given order, whatever their suffix); folders are walked recursively (not into symlinked
// folders) keeping regular files (or links to them) with an image suffix, hidden parts skipped, sorted per
// folder with path_less; dangling symlinks, FIFOs, sockets and devices in folders are counted, never opened.
// Duplicates dropped (first wins).
// Throws ImageError "<path>: no such file or folder; check the path" for a path that does not exist.
DER_API FoundImages find_images(const std::vector<std::string>& paths);

}  // namespace der
