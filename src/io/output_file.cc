#include "io/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "moerun/errors.h"

namespace moerun::io {

namespace {

namespace fs = std::filesystem;

// Errors that say the machine ran out of something, whatever the path.
bool is_resource_error(int error) {
  return error == ENOSPC || error == EDQUOT || error == EFBIG || error == EIO || error == ENOMEM;
}

// Built piecewise: GCC 12's -Wrestrict misfires on "'" + string.
std::string quoted(const fs::path& path) {
  std::string text = "'";
  text += path.string();
  text += "'";
  return text;
}

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a named pipe";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// The file a path names, through symbolic links, when it exists.
bool stat_path(const fs::path& path, struct stat& st) { return ::stat(path.c_str(), &st) == 0; }

}  // namespace

OutputFile::OutputFile(const fs::path& target, const std::vector<fs::path>& inputs)
    : target_(target) {
  check_arg(!target.empty() && target.has_filename(), "output path", "a file name", quoted(target));
  struct stat existing {};
  const bool exists = stat_path(target, existing);
  if (exists) {
    check_arg(S_ISREG(existing.st_mode), "output " + quoted(target),
              "a regular file or a new file name", file_kind(existing.st_mode));
    for (const fs::path& input : inputs) {
      struct stat in {};
      // The same device and inode is the same file, whatever the path (symbolic or hard links).
      if (stat_path(input, in) && in.st_dev == existing.st_dev && in.st_ino == existing.st_ino) {
        throw InvalidArgument("output " + quoted(target), "a file that is none of the run's inputs",
                              "the same file as the input " + quoted(input));
      }
    }
  }
  std::error_code ec;
  // A link is written through: the file it names is the one replaced, in that file's folder.
  resolved_ = fs::weakly_canonical(fs::absolute(target, ec), ec);
  if (ec || resolved_.empty()) resolved_ = target;
  const fs::path folder = resolved_.parent_path().empty() ? fs::path(".") : resolved_.parent_path();
  // Created here, not at the first write: an unwritable folder fails before the work starts.
  std::string stem = ".";  // piecewise, as quoted()
  stem += resolved_.filename().string();
  stem += ".moerun-" + std::to_string(::getpid()) + "-";
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temporary_ = folder / (stem + std::to_string(attempt) + ".tmp");
    // 0666 under the umask, as a new file of any program; an existing file's mode is kept below.
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && (errno != EEXIST || attempt == 99)) {
      const int error = errno;
      temporary_.clear();
      const std::string message = "output " + quoted(target) +
                                  ": cannot create a temporary file in " + quoted(folder) + ": " +
                                  std::strerror(error);
      if (is_resource_error(error)) throw ResourceError(message);
      throw Error(message);
    }
  }
  if (exists && ::fchmod(fd_, existing.st_mode & 07777) != 0) {
    const int error = errno;
    ::close(fd_);
    ::unlink(temporary_.c_str());  // the destructor does not run for a constructor that throws
    throw Error("output " + quoted(target) + ": cannot give " + quoted(temporary_) +
                " the mode of the file it replaces: " + std::strerror(error));
  }
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temporary_.empty()) ::unlink(temporary_.c_str());
}

void OutputFile::fail(const char* what, int error) const {
  const std::string message = "output " + quoted(target_) + ": " + what + " the temporary file " +
                              quoted(temporary_) + " after " + std::to_string(written_) +
                              " bytes: " + std::strerror(error) +
                              " (the file at the output path is untouched)";
  if (is_resource_error(error)) throw ResourceError(message);
  throw Error(message);
}

void OutputFile::reserve(std::uint64_t bytes) {
  check_arg(fd_ >= 0 && !committed_, "output file", "open (reserve before commit)", "committed");
  if (bytes <= reserved_) return;
  const int error = ::posix_fallocate(fd_, 0, static_cast<off_t>(bytes));
  // EOPNOTSUPP/EINVAL: this file system cannot reserve; the writes are checked all the same.
  if (error == 0) {
    reserved_ = bytes;
  } else if (error != EOPNOTSUPP && error != EINVAL && error != ENOSYS) {
    fail(("cannot reserve " + std::to_string(bytes) + " bytes for").c_str(), error);
  }
}

void OutputFile::write(std::span<const std::byte> bytes) {
  check_arg(fd_ >= 0 && !committed_, "output file", "open (write before commit)", "committed");
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
    written_ += static_cast<std::uint64_t>(n);
  }
}

void OutputFile::commit() {
  check_arg(fd_ >= 0 && !committed_, "output file", "open (commit once)", "committed");
  // A reservation larger than what was written leaves no tail of zeros.
  if (reserved_ > written_ && ::ftruncate(fd_, static_cast<off_t>(written_)) != 0) {
    fail("cannot truncate", errno);
  }
  if (::fsync(fd_) != 0) fail("cannot flush", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot close", errno);
  if (::rename(temporary_.c_str(), resolved_.c_str()) != 0) fail("cannot rename", errno);
  committed_ = true;
  // The rename itself is made durable by flushing the folder (best effort: some file systems
  // cannot open a folder for it).
  const int dir = ::open(resolved_.parent_path().empty() ? "." : resolved_.parent_path().c_str(),
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace moerun::io
