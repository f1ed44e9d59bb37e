// Folder walking, path order and path text (der_deploy.images.find_images, Python's pathlib ordering).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include "der/error.hpp"
#include "der/paths.hpp"

namespace {

TEST(Paths, NormalizeLikePathlib) {
  EXPECT_EQ(der::normalize_path("./a//b/./c/"), "a/b/c");
  EXPECT_EQ(der::normalize_path(""), ".");
  EXPECT_EQ(der::normalize_path("./"), ".");
  EXPECT_EQ(der::normalize_path("///x/../y"), "/x/../y");
  EXPECT_EQ(der::normalize_path("//x"), "//x");
}

TEST(Paths, PathTextEscapesBackslashesAndInvalidBytes) {
  EXPECT_EQ(der::path_text("dir/caf\xc3\xa9.jpg"), "dir/caf\xc3\xa9.jpg");
  EXPECT_EQ(der::path_text("a\\b"), "a\\\\b");
  EXPECT_EQ(der::path_text("bad\xff\xfe.jpg"), "bad\\xff\\xfe.jpg");
  EXPECT_EQ(der::path_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a UTF-8 encoded surrogate is not valid UTF-8
  EXPECT_EQ(der::path_text("\xc0\xaf"), "\\xc0\\xaf");              // overlong
  EXPECT_EQ(der::path_text("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");  // emoji kept
}

TEST(Paths, OrderIsPythonsNotBytes) {
  // By parts: "a/b" < "a-b" because "a" < "a-b" ('/' is not compared as a character).
  EXPECT_TRUE(der::path_less("a/b", "a-b"));
  EXPECT_FALSE(std::string("a/b") < std::string("a-b"));
  // An undecodable byte is U+DCxx, which sorts before U+E000 although 0xFF > 0xEE as bytes.
  EXPECT_TRUE(der::path_less("\xff", "\xee\x80\x80"));
  EXPECT_TRUE(der::path_less("Z", "a"));
  EXPECT_TRUE(der::path_less("a", "a/b"));
  EXPECT_FALSE(der::path_less("a", "a"));
}

class Walk : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/der-paths-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    for (const char* d : {"sub", "sub/deeper", ".hidden", "x.jpg"}) ::mkdir((root_ + "/" + d).c_str(), 0755);
    for (const char* f : {"b.JPG", "a.png", "notes.txt", "sub/c.webp", "sub/deeper/d.jpeg", ".hidden/e.jpg", ".f.jpg"})
      std::ofstream(root_ + "/" + f) << "x";
    ::symlink("missing.jpg", (root_ + "/dangling.jpg").c_str());
    ::symlink("a.png", (root_ + "/link.png").c_str());
    ::mkfifo((root_ + "/pipe.jpg").c_str(), 0644);
  }
  void TearDown() override { std::system(("rm -rf '" + root_ + "'").c_str()); }
  std::string root_;
};

TEST_F(Walk, FindsImagesRecursivelySortedAndCountsSkipped) {
  const auto found = der::find_images({root_ + "/"});
  std::vector<std::string> want;
  for (const char* f : {"a.png", "b.JPG", "link.png", "sub/c.webp", "sub/deeper/d.jpeg"}) want.push_back(root_ + "/" + f);
  EXPECT_EQ(found.paths, want);
  EXPECT_EQ(found.skipped_total(), 2u);
  EXPECT_EQ(found.describe_skipped(), "skipped in folders: 1 dangling symlink, 1 FIFO");
}

TEST_F(Walk, ExplicitFilesKeptInOrderAndDeduplicated) {
  const auto found = der::find_images({root_ + "/notes.txt", root_ + "/sub", root_ + "//notes.txt"});
  EXPECT_EQ(found.paths, (std::vector<std::string>{root_ + "/notes.txt", root_ + "/sub/c.webp",
                                                   root_ + "/sub/deeper/d.jpeg"}));
}

TEST_F(Walk, MissingPathIsAnImageError) {
  try {
    der::find_images({root_ + "/nope"});
    FAIL();
  } catch (const der::ImageError& e) {
    EXPECT_EQ(e.reason(), "no such file or folder; check the path");
  }
}

}  // namespace
