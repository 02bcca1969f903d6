// OutputFile: a file written whole or not at all, and never over one of the run's inputs.
//
// The bytes go to a temporary file created beside the target (same folder, so that the final
// rename stays on one file system), which replaces the target only after every byte was written,
// flushed to disk and closed. Until then, and whenever anything fails, the file already at the
// target is untouched, and the temporary file is removed when the object dies. A target that is a
// symbolic link is written through: the link stays, the file it names is replaced.
//
// Errors name the path and the OS reason (strerror). A full disk, a file size limit or an I/O
// error is a ResourceError; a path that cannot be written (no such folder, permission denied, a
// read-only file system) is an Error; a target that is a directory, a device or an input is an
// InvalidArgument.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace moerun::io {

class OutputFile {
 public:
  // Checks `target` and creates the temporary file at once, before any work whose result would be
  // lost: rejects a target that exists and is not a regular file, or is the same file (device and
  // inode: through symbolic and hard links too) as one of `inputs`; an unwritable folder fails
  // here.
  explicit OutputFile(const std::filesystem::path& target,
                      const std::vector<std::filesystem::path>& inputs = {});
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // The path as given, for messages.
  const std::filesystem::path& target() const { return target_; }
  // Where the bytes go until commit() (removed unless committed).
  const std::filesystem::path& temporary_path() const { return temporary_; }

  // Claims `bytes` of disk for the file now, so that a full disk or a file size limit is found
  // before the work rather than after it. A file system that cannot reserve space is not an error
  // (the writes are still checked).
  void reserve(std::uint64_t bytes);
  void write(std::span<const std::byte> bytes);
  // Flushes and closes the temporary file and renames it over the target: afterwards the target
  // holds exactly the bytes written. Only once; nothing may be written after it.
  void commit();

 private:
  [[noreturn]] void fail(const char* what, int error) const;

  std::filesystem::path target_;     // as given
  std::filesystem::path resolved_;   // through symbolic links: the file that is replaced
  std::filesystem::path temporary_;  // beside resolved_
  int fd_ = -1;
  std::uint64_t written_ = 0;
  std::uint64_t reserved_ = 0;
  bool committed_ = false;
};

}  // namespace moerun::io
