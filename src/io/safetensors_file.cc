// SafetensorsFile: a read-only memory mapping of one safetensors file. Tensors are served as views
// of the mapping, so loading a matching dtype copies nothing and the page cache is the only copy.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/safetensors.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

std::string system_error(const std::string& path, const char* what) {
  return path + ": " + what + ": " + std::strerror(errno);
}

// Closes the descriptor on every path out of the constructor; the mapping outlives it.
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

Shape to_shape(const std::vector<std::int64_t>& extents) {
  switch (extents.size()) {
    case 1:
      return Shape{extents[0]};
    case 2:
      return Shape{extents[0], extents[1]};
    case 3:
      return Shape{extents[0], extents[1], extents[2]};
    case 4:
      return Shape{extents[0], extents[1], extents[2], extents[3]};
    default:
      throw Error("no moerun shape of rank " + std::to_string(extents.size()));
  }
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path.string()) {
  FileDescriptor file{::open(path_.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) throw Error(system_error(path_, "cannot open"));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw Error(system_error(path_, "cannot stat"));
  if (!S_ISREG(st.st_mode)) throw Error(path_ + ": not a regular file");
  size_ = static_cast<std::uint64_t>(st.st_size);
  // An empty file cannot be mapped; the parser rejects it as truncated without reading.
  if (size_ > 0) {
    void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
    if (map == MAP_FAILED) throw Error(system_error(path_, "cannot map"));
    map_ = static_cast<const std::byte*>(map);
  }
  try {
    header_ = parse_safetensors_header({map_, static_cast<std::size_t>(size_)}, path_);
  } catch (...) {
    if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), size_);
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw Error(path_ + ": missing tensor '" + std::string(name) + "'");
  return *t;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& tensor) const {
  // The parser checked [begin, end) against the buffer, so this stays inside the mapping.
  return {map_ + header_.data_start + tensor.begin, static_cast<std::size_t>(tensor.nbytes())};
}

std::optional<TensorView> SafetensorsFile::view(const TensorInfo& tensor) const {
  const std::optional<DType> dtype = to_moerun_dtype(tensor.dtype);
  if (!dtype || tensor.shape.empty() || tensor.shape.size() > kMaxTensorDims) return std::nullopt;
  const std::byte* data = bytes(tensor).data();
  // Typed loads through a misaligned pointer are undefined behaviour; such tensors are copied.
  if (reinterpret_cast<std::uintptr_t>(data) % dtype_size(*dtype) != 0) return std::nullopt;
  // NOTE: the mapping is PROT_READ; TensorView has no const flavour, and a write would fault.
  return TensorView(const_cast<std::byte*>(data), *dtype, to_shape(tensor.shape));
}

}  // namespace moerun::io
