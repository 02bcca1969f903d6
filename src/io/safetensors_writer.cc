// The safetensors writer: moerun's outputs and the tests' checkpoints.
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "moerun/errors.h"

namespace moerun::io {

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

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
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
    check_arg(nbytes == t.data.size(), "bytes of tensor '" + t.name + "' written to " + file,
              std::to_string(nbytes) + " for its shape and dtype", t.data.size());
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  // Spaces are JSON whitespace: the padding keeps the buffer 8-byte aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(file + ": cannot open for writing");
  std::uint64_t length = text.size();
  char length_bytes[8];
  for (char& b : length_bytes) {
    b = static_cast<char>(length & 0xff);
    length >>= 8;
  }
  out.write(length_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : tensors) {
    out.write(reinterpret_cast<const char*>(t.data.data()),
              static_cast<std::streamsize>(t.data.size()));
  }
  out.close();
  if (!out) throw Error(file + ": write failed");
}

}  // namespace moerun::io
