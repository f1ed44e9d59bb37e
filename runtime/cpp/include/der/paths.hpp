// Finding images and writing paths, as der_deploy.images.find_images and der_deploy's path text do.
#pragma once

#include <string>
#include <vector>

namespace der {

// The suffixes a folder walk keeps (compared case-insensitively): der_deploy.images.IMAGE_EXTENSIONS.
const std::vector<std::string>& image_extensions();

// A path spelled as Python's pathlib prints it: repeated and trailing slashes and "." parts dropped
// ("./a//b/" -> "a/b"; "" -> ".").
std::string normalize_path(const std::string& path);

// The path's bytes as UTF-8 text for every output format: valid UTF-8 as is, every "\" written as "\\",
// every byte outside valid UTF-8 as "\xNN" (lowercase hex). Lossless, and always valid UTF-8 / strict JSON.
std::string path_text(const std::string& path);

// Python's ordering of pathlib paths: by parts, each part by code points with undecodable bytes read as
// U+DC80..U+DCFF (surrogateescape) -- not plain byte order.
bool path_less(const std::string& a, const std::string& b);

struct FoundImages {
  std::vector<std::string> paths;  // normalised, in order, de-duplicated
  std::size_t skipped = 0;         // entries inside folders skipped: dangling symlinks, FIFOs, sockets, devices
};

// Expand files and folders: explicit paths are kept (in the given order, whatever their suffix); folders are
// walked recursively (not into symlinked folders) keeping regular files (or links to them) with an image
// suffix, hidden parts skipped, sorted per folder with path_less. Duplicates dropped (first wins).
// Throws ImageError "<path>: no such file or folder; check the path" for a path that does not exist.
FoundImages find_images(const std::vector<std::string>& paths);

}  // namespace der
