// The safetensors writer: moerun's outputs and the tests' checkpoints, written through an
// OutputFile (whole or not at all).
#include <nlohmann/json.hpp>

#include "io/output_file.h"
#include "io/safetensors.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

// The header text (padded to a multiple of 8 bytes) and the buffer's size, from the tensors'
// names, dtypes and shapes; their data spans are not read.
struct Layout {
  std::string header;
  std::uint64_t data_bytes = 0;
};

Layout layout_of(const std::vector<TensorToWrite>& tensors,
                 const std::map<std::string, std::string>& metadata, const std::string& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    check_arg(t.name != "__metadata__", "tensor name in " + file, "not \"__metadata__\"", t.name);
    check_arg(!header.contains(t.name), "tensor name in " + file, "unique", t.name);
    std::uint64_t numel = 1;
    for (std::int64_t extent : t.shape) {
      check_arg(extent >= 0, "shape of tensor '" + t.name + "'", "non-negative extents", extent);
      numel *= static_cast<std::uint64_t>(extent);
    }
    const std::uint64_t nbytes = numel * st_dtype_size(t.dtype);
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  // Spaces are JSON whitespace: the padding keeps the buffer 8-byte aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  return {std::move(text), offset};
}

}  // namespace

TensorToWrite tensor_to_write(std::string name, const TensorView& view) {
  check_arg(view.is_contiguous(), "layout of tensor '" + name + "'", "contiguous", "strided");
  check_arg(view.device().type == DeviceType::kCpu, "device of tensor '" + name + "'", "cpu",
            device_name(view.device()));
  std::vector<std::int64_t> shape;
  for (int d = 0; d < view.ndim(); ++d) shape.push_back(view.size(d));
  return {std::move(name),
          to_st_dtype(view.dtype()),
          std::move(shape),
          {static_cast<const std::byte*>(view.data()), view.nbytes()}};
}

std::uint64_t safetensors_file_size(const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  const Layout layout = layout_of(tensors, metadata, "a safetensors file");
  return 8 + layout.header.size() + layout.data_bytes;
}

void write_safetensors(OutputFile& file, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string name = file.target().string();
  const Layout layout = layout_of(tensors, metadata, name);
  for (const auto& t : tensors) {
    std::uint64_t numel = 1;
    for (std::int64_t extent : t.shape) numel *= static_cast<std::uint64_t>(extent);
    const std::uint64_t nbytes = numel * st_dtype_size(t.dtype);
    check_arg(nbytes == t.data.size(), "bytes of tensor '" + t.name + "' written to " + name,
              std::to_string(nbytes) + " for its shape and dtype", t.data.size());
  }
  file.reserve(8 + layout.header.size() + layout.data_bytes);
  std::uint64_t length = layout.header.size();
  std::byte length_bytes[8];
  for (std::byte& b : length_bytes) {
    b = static_cast<std::byte>(length & 0xff);
    length >>= 8;
  }
  file.write(length_bytes);
  file.write(std::as_bytes(std::span(layout.header)));
  for (const auto& t : tensors) file.write(t.data);
  file.commit();
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  OutputFile file(path);
  write_safetensors(file, tensors, metadata);
}

}  // namespace moerun::io
