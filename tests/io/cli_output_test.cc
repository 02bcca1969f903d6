// `moerun run --output`: nothing lost. The output never replaces one of the run's inputs (the
// same file through any path or link), a failed write leaves the previous output as it was, an
// unwritable path fails before the load and the forward, and no stray file is ever left behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_run.h"
#include "fixture.h"
#include "io/safetensors.h"

namespace moerun::io {
namespace {

namespace fs = std::filesystem;
using test::CliResult;
using test::q;
using test::run_cli;
using test::TempDir;

// A checkpoint and a hidden-states file in `dir`: dir/model (Qwen3, BF16), dir/x.safetensors (64
// tokens: an output of 16 KiB).
void write_inputs(const TempDir& dir, bool down_back_to_back = false) {
  test::FixtureOptions o = test::qwen3_moe_options();
  o.down_back_to_back = down_back_to_back;
  test::write_fixture(dir / "model", o);
  test::write_hidden_states(dir / "x.safetensors", 64, o.hidden, StDType::kBF16, 3);
}

std::string run_args(const TempDir& dir, const fs::path& output) {
  return "run --model " + q(dir / "model") + " --input " + q(dir / "x.safetensors") + " --output " +
         q(output);
}

// The names in a folder (a leftover temporary file would show here).
std::vector<std::string> names_in(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(folder)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_refused_as_input(const CliResult& r, const fs::path& output) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("invalid output '" + output.string() +
                          "': expected a file that is none of the run's inputs, got the same "
                          "file as the input"),
            std::string::npos)
      << r.output;
}

TEST(RunOutput, RefusesTheCheckpointItselfAndLeavesItIntact) {
  TempDir dir;
  write_inputs(dir, /*down_back_to_back=*/true);  // w2 is a zero-copy view of the mapping
  const fs::path checkpoint = dir / "model" / "model.safetensors";
  const std::vector<std::byte> before = test::read_bytes(checkpoint);
  const std::vector<std::string> files = names_in(dir / "model");
  const CliResult r = run_cli(run_args(dir, checkpoint) + " --check");
  expect_refused_as_input(r, checkpoint);
  EXPECT_EQ(test::read_bytes(checkpoint), before);
  EXPECT_EQ(names_in(dir / "model"), files) << "no temporary file left";
  EXPECT_EQ(run_cli("info --model " + q(dir / "model")).exit_code, 0);
}

TEST(RunOutput, RefusesTheInputThroughSymbolicAndHardLinks) {
  TempDir dir;
  write_inputs(dir);
  fs::create_directories(dir / "links");
  fs::create_symlink(dir / "x.safetensors", dir / "links" / "symbolic.safetensors");
  fs::create_hard_link(dir / "model" / "model.safetensors", dir / "links" / "hard.safetensors");
  fs::create_hard_link(dir / "model" / "config.json", dir / "links" / "config.safetensors");
  const std::vector<std::byte> input = test::read_bytes(dir / "x.safetensors");
  const std::vector<std::byte> checkpoint = test::read_bytes(dir / "model" / "model.safetensors");
  for (const char* name : {"symbolic.safetensors", "hard.safetensors", "config.safetensors"}) {
    SCOPED_TRACE(name);
    expect_refused_as_input(run_cli(run_args(dir, dir / "links" / name)), dir / "links" / name);
  }
  expect_refused_as_input(run_cli(run_args(dir, dir / "x.safetensors")), dir / "x.safetensors");
  EXPECT_EQ(test::read_bytes(dir / "x.safetensors"), input);
  EXPECT_EQ(test::read_bytes(dir / "model" / "model.safetensors"), checkpoint);
}

TEST(RunOutput, FailedWriteKeepsThePreviousOutput) {
  TempDir dir;
  write_inputs(dir);
  const fs::path out = dir / "y.safetensors";
  // A previous output bigger than the limit below, so that a truncating writer would shrink it.
  test::write_bytes(out, std::vector<std::byte>(64 * 1024, std::byte{0x5a}));
  const std::vector<std::string> files = names_in(dir.path());
  // ulimit -f counts 1024-byte blocks: 4 KiB, far less than this output.
  const CliResult r = run_cli(run_args(dir, out) + " --save-routing", false, "ulimit -f 4; ");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("output '" + out.string() + "': "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
  EXPECT_EQ(test::read_bytes(out), std::vector<std::byte>(64 * 1024, std::byte{0x5a}));
  EXPECT_EQ(names_in(dir.path()), files) << "no temporary file left";
}

TEST(RunOutput, UnwritablePathFailsBeforeTheLoad) {
  TempDir dir;
  write_inputs(dir);
  // A checkpoint that fails to load: the output's error must come first.
  const fs::path checkpoint = dir / "model" / "model.safetensors";
  std::vector<std::byte> bytes = test::read_bytes(checkpoint);
  bytes.resize(bytes.size() / 2);
  test::write_bytes(checkpoint, bytes);
  const fs::path missing = dir / "no" / "such" / "folder" / "y.safetensors";
  const CliResult r = run_cli(run_args(dir, missing));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(
      r.output.find("output '" + missing.string() + "': cannot create a temporary file in '" +
                    (dir / "no" / "such" / "folder").string() + "': No such file or directory"),
      std::string::npos)
      << r.output;
  const fs::path not_a_folder = dir / "x.safetensors" / "y.safetensors";
  const CliResult under_file = run_cli(run_args(dir, not_a_folder));
  EXPECT_EQ(under_file.exit_code, 2) << under_file.output;
  EXPECT_NE(under_file.output.find(": Not a directory"), std::string::npos) << under_file.output;
}

TEST(RunOutput, RefusesDirectoriesAndDevices) {
  TempDir dir;
  write_inputs(dir);
  const CliResult folder = run_cli(run_args(dir, dir / "model"));
  EXPECT_EQ(folder.exit_code, 2) << folder.output;
  EXPECT_NE(folder.output.find("expected a regular file or a new file name, got a directory"),
            std::string::npos)
      << folder.output;
  const CliResult device = run_cli(run_args(dir, "/dev/full"));
  EXPECT_EQ(device.exit_code, 2) << device.output;
  EXPECT_NE(device.output.find("invalid output '/dev/full': expected a regular file or a new file "
                               "name, got a character device"),
            std::string::npos)
      << device.output;
}

TEST(RunOutput, ReplacesThePreviousOutputWholeKeepingItsMode) {
  TempDir dir;
  write_inputs(dir);
  const fs::path out = dir / "y.safetensors";
  test::write_bytes(out, std::vector<std::byte>(100000, std::byte{1}));
  ::chmod(out.c_str(), 0640);
  const std::vector<std::string> files = names_in(dir.path());
  const CliResult r = run_cli(run_args(dir, out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const SafetensorsFile y(out);
  EXPECT_EQ(y.header().tensors.size(), 1u);
  EXPECT_EQ(y.file_size(), y.header().data_start + y.at("hidden_states").nbytes())
      << "exactly the new file, no tail of the old one";
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(names_in(dir.path()), files);
}

TEST(RunOutput, WritesThroughASymbolicLinkToAnOutput) {
  TempDir dir;
  write_inputs(dir);
  fs::create_directories(dir / "real");
  test::write_bytes(dir / "real" / "y.safetensors", {std::byte{7}});
  fs::create_symlink(dir / "real" / "y.safetensors", dir / "link.safetensors");
  const CliResult r = run_cli(run_args(dir, dir / "link.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::is_symlink(dir / "link.safetensors"));
  const SafetensorsFile y(dir / "real" / "y.safetensors");
  EXPECT_NE(y.find("hidden_states"), nullptr);
}

}  // namespace
}  // namespace moerun::io
