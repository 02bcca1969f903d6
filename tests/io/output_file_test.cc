// OutputFile: whole or nothing. The target changes only at commit(), a file that dies before it
// leaves the target as it was and no temporary file behind, and errors name the path.
#include "io/output_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "fixture.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::io {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::vector<std::byte> bytes_of(const char* text) {
  std::vector<std::byte> b;
  for (const char* p = text; *p != '\0'; ++p) b.push_back(static_cast<std::byte>(*p));
  return b;
}

std::size_t files_in(const fs::path& folder) {
  return static_cast<std::size_t>(
      std::distance(fs::directory_iterator(folder), fs::directory_iterator()));
}

TEST(OutputFile, TargetChangesOnlyAtCommit) {
  TempDir dir;
  const fs::path target = dir / "y.bin";
  test::write_bytes(target, bytes_of("old"));
  OutputFile file(target);
  EXPECT_EQ(file.temporary_path().parent_path(), fs::weakly_canonical(dir.path()));
  EXPECT_TRUE(fs::exists(file.temporary_path())) << "created before any write";
  file.reserve(1000);
  file.write(bytes_of("new "));
  file.write(bytes_of("bytes"));
  EXPECT_EQ(test::read_bytes(target), bytes_of("old"));
  file.commit();
  EXPECT_EQ(test::read_bytes(target), bytes_of("new bytes")) << "no tail from the reservation";
  EXPECT_EQ(files_in(dir.path()), 1u);
}

TEST(OutputFile, AbandonedFileLeavesTheTargetAndNoTemporary) {
  TempDir dir;
  const fs::path target = dir / "y.bin";
  test::write_bytes(target, bytes_of("old"));
  {
    OutputFile file(target);
    file.write(bytes_of("half of it"));
  }
  EXPECT_EQ(test::read_bytes(target), bytes_of("old"));
  EXPECT_EQ(files_in(dir.path()), 1u);
  { OutputFile file(dir / "new.bin"); }
  EXPECT_FALSE(fs::exists(dir / "new.bin"));
  EXPECT_EQ(files_in(dir.path()), 1u);
}

TEST(OutputFile, RejectsInputsDirectoriesAndMissingFolders) {
  TempDir dir;
  test::write_bytes(dir / "in.bin", bytes_of("input"));
  fs::create_hard_link(dir / "in.bin", dir / "hard.bin");
  fs::create_symlink(dir / "in.bin", dir / "soft.bin");
  const std::vector<fs::path> inputs{dir / "in.bin"};
  for (const char* name : {"in.bin", "hard.bin", "soft.bin"}) {
    const std::string message = test::error_of([&] { OutputFile file(dir / name, inputs); });
    EXPECT_CONTAINS(message,
                    "expected a file that is none of the run's inputs, got the same file "
                    "as the input '" +
                        (dir / "in.bin").string() + "'");
  }
  EXPECT_EQ(test::read_bytes(dir / "in.bin"), bytes_of("input"));
  EXPECT_THROW(OutputFile file(dir.path(), inputs), InvalidArgument);
  const std::string missing = test::error_of([&] { OutputFile file(dir / "no" / "y.bin"); });
  EXPECT_CONTAINS(missing, "cannot create a temporary file in '" + (dir / "no").string() +
                               "': No such file or directory");
  EXPECT_EQ(files_in(dir.path()), 3u);
}

}  // namespace
}  // namespace moerun::io
