// safetensors: Hugging Face's tensor file format, read memory-mapped and written.
//
// A file is: an 8-byte little-endian header length N, N bytes of JSON header, then the data
// buffer. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]},
// byte offsets relative to the buffer; the optional "__metadata__" holds string pairs.
//
// Every length, offset and size is checked before any tensor byte is read, so a bad file is
// rejected with an Error that names the file and the tensor, never read out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moerun/dtype.h"
#include "moerun/tensor.h"

namespace moerun::io {

// The element types a safetensors header may name (all of the format's, so that files holding
// tensors moerun does not use still open).
enum class StDType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
};

std::size_t st_dtype_size(StDType dtype);
// The header's spelling: "BF16", "F8_E4M3", ...
std::string_view st_dtype_name(StDType dtype);
std::optional<StDType> parse_st_dtype(std::string_view name);
// The moerun dtype a file dtype is viewed as without conversion, when there is one.
std::optional<DType> to_moerun_dtype(StDType dtype);
StDType to_st_dtype(DType dtype);

struct TensorInfo {
  std::string name;
  StDType dtype = StDType::kU8;
  std::vector<std::int64_t> shape;  // may have any rank, including 0 (a scalar)
  std::uint64_t begin = 0;          // [begin, end): bytes of the data buffer
  std::uint64_t end = 0;

  std::int64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
  // "[4, 128]"
  std::string shape_string() const;
};

struct SafetensorsHeader {
  std::uint64_t data_start = 0;  // 8 + header length: the buffer's first byte in the file
  std::uint64_t data_size = 0;   // bytes of the buffer (to the end of the file)
  std::map<std::string, TensorInfo, std::less<>> tensors;
  std::map<std::string, std::string> metadata;

  const TensorInfo* find(std::string_view name) const;
};

// Parses and checks the header of `file`, the bytes of a whole safetensors file; `file_name`
// names it in errors. Rejects a truncated file, a header length beyond the file, malformed JSON,
// unknown dtypes, sizes that disagree with shapes, and out-of-range or overlapping offsets.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file,
                                           std::string_view file_name);

// One safetensors file, memory-mapped read-only for as long as the object lives.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t file_size() const { return size_; }
  const SafetensorsHeader& header() const { return header_; }

  const TensorInfo* find(std::string_view name) const { return header_.find(name); }
  // Rejects a missing tensor, naming the file.
  const TensorInfo& at(std::string_view name) const;
  std::span<const std::byte> bytes(const TensorInfo& tensor) const;
  // A zero-copy view of a tensor whose file dtype is a moerun dtype, of at most 4 dimensions,
  // aligned to its element size; nullopt otherwise. The memory is mapped read-only: never write
  // through the view.
  std::optional<TensorView> view(const TensorInfo& tensor) const;

 private:
  std::string path_;
  const std::byte* map_ = nullptr;
  std::uint64_t size_ = 0;
  SafetensorsHeader header_;
};

// One tensor to write: the bytes must hold exactly numel(shape) elements of `dtype`.
struct TensorToWrite {
  std::string name;
  StDType dtype = StDType::kU8;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
};

// A host tensor's bytes, to write under `name` (bf16, f32, fp8_e4m3 or i32).
TensorToWrite tensor_to_write(std::string name, const TensorView& view);

class OutputFile;

// Writes a safetensors file with the tensors in the given order (the data buffer follows it, so
// callers choose which tensors are adjacent), whole or not at all (io/output_file.h): `file` is
// committed when every byte is written. The header is padded with spaces to a multiple of 8 bytes,
// as the reference writer does, so that every tensor whose offset is aligned in the buffer stays
// aligned in a mapping.
void write_safetensors(OutputFile& file, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The same through an OutputFile of `path` (no inputs to avoid).
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The bytes such a file takes, from the tensors' names, dtypes and shapes (their data spans are
// not read): what OutputFile::reserve needs before the tensors are computed.
std::uint64_t safetensors_file_size(const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata = {});

}  // namespace moerun::io
