// The safetensors header parser: the only code that reads untrusted bytes, hence fuzzed
// (tests/fuzz/safetensors_fuzz.cc). It checks everything before it trusts anything.
#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_brief.h"
#include "io/safetensors.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

struct DTypeEntry {
  StDType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeEntry, 15> kDTypes{{
    {StDType::kBool, "BOOL", 1},
    {StDType::kU8, "U8", 1},
    {StDType::kI8, "I8", 1},
    {StDType::kF8E4M3, "F8_E4M3", 1},
    {StDType::kF8E5M2, "F8_E5M2", 1},
    {StDType::kI16, "I16", 2},
    {StDType::kU16, "U16", 2},
    {StDType::kF16, "F16", 2},
    {StDType::kBF16, "BF16", 2},
    {StDType::kI32, "I32", 4},
    {StDType::kU32, "U32", 4},
    {StDType::kF32, "F32", 4},
    {StDType::kI64, "I64", 8},
    {StDType::kU64, "U64", 8},
    {StDType::kF64, "F64", 8},
}};

const DTypeEntry& entry(StDType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  throw Error("unknown safetensors dtype value " + std::to_string(static_cast<int>(dtype)));
}

// The reference implementation refuses headers above 100 MB; so do we, before parsing one.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(std::string_view file, const std::string& what) {
  throw Error(std::string(file) + ": " + what);
}

[[noreturn]] void fail_tensor(std::string_view file, std::string_view tensor,
                              const std::string& what) {
  fail(file, "tensor '" + std::string(tensor) + "': " + what);
}

std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | std::to_integer<std::uint64_t>(p[i]);
  return value;
}

std::string offsets_text(std::uint64_t begin, std::uint64_t end) {
  // Appended piecewise: GCC 12's -Wrestrict misfires on "[" + std::to_string(...).
  std::string text = "[";
  text += std::to_string(begin);
  text += ", ";
  text += std::to_string(end);
  text += "]";
  return text;
}

TensorInfo parse_tensor(const std::string& name, const nlohmann::json& value,
                        std::uint64_t data_size, std::string_view file) {
  if (!value.is_object()) fail_tensor(file, name, "entry is not a JSON object");
  TensorInfo t;
  t.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    fail_tensor(file, name, "missing \"dtype\" string");
  }
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<StDType> dtype = parse_st_dtype(dtype_name);
  if (!dtype) fail_tensor(file, name, "unsupported dtype '" + dtype_name + "'");
  t.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) {
    fail_tensor(file, name, "missing \"shape\" array");
  }
  // Checked products: a hostile shape must not wrap around into a small, "valid" size.
  std::uint64_t numel = 1;
  for (const auto& extent : *shape_it) {
    if (!extent.is_number_unsigned()) {
      fail_tensor(file, name,
                  "shape " + json_brief(*shape_it) + " has an entry that is not a size");
    }
    const auto n = extent.get<std::uint64_t>();
    if (n > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, n, &numel)) {
      fail_tensor(file, name, "shape " + json_brief(*shape_it) + " overflows 64 bits");
    }
    t.shape.push_back(static_cast<std::int64_t>(n));
  }
  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, entry(t.dtype).size, &nbytes)) {
    fail_tensor(file, name, "shape " + json_brief(*shape_it) + " overflows 64 bits");
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    fail_tensor(file, name, "missing \"data_offsets\" [begin, end] pair of sizes");
  }
  t.begin = (*offsets_it)[0].get<std::uint64_t>();
  t.end = (*offsets_it)[1].get<std::uint64_t>();
  if (t.begin > t.end) {
    fail_tensor(file, name, "data_offsets " + offsets_text(t.begin, t.end) + " end before begin");
  }
  if (t.end > data_size) {
    fail_tensor(file, name,
                "data_offsets " + offsets_text(t.begin, t.end) +
                    " out of range: the data buffer "
                    "has " +
                    std::to_string(data_size) + " bytes (truncated file?)");
  }
  if (t.end - t.begin != nbytes) {
    fail_tensor(file, name,
                "data_offsets " + offsets_text(t.begin, t.end) + " hold " +
                    std::to_string(t.end - t.begin) + " bytes, but " + t.shape_string() + " " +
                    dtype_name + " needs " + std::to_string(nbytes));
  }
  return t;
}

void parse_metadata(const nlohmann::json& value, SafetensorsHeader& header, std::string_view file) {
  if (!value.is_object()) fail(file, "\"__metadata__\" is not a JSON object");
  for (const auto& [key, text] : value.items()) {
    if (!text.is_string()) fail(file, "\"__metadata__\" value of '" + key + "' is not a string");
    header.metadata.emplace(key, text.get<std::string>());
  }
}

// Two tensors may not share a byte: a writer bug, or a crafted file aliasing weights.
void check_no_overlap(const SafetensorsHeader& header, std::string_view file) {
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, t] : header.tensors) {
    if (t.nbytes() > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin < b->begin || (a->begin == b->begin && a->name < b->name);
  });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& next = *by_offset[i];
    if (next.begin < prev.end) {
      fail_tensor(file, next.name,
                  "data_offsets " + offsets_text(next.begin, next.end) + " overlap those of '" +
                      prev.name + "' " + offsets_text(prev.begin, prev.end));
    }
  }
}

}  // namespace

std::size_t st_dtype_size(StDType dtype) { return entry(dtype).size; }
std::string_view st_dtype_name(StDType dtype) { return entry(dtype).name; }

std::optional<StDType> parse_st_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

std::optional<DType> to_moerun_dtype(StDType dtype) {
  switch (dtype) {
    case StDType::kBF16:
      return DType::kBF16;
    case StDType::kF32:
      return DType::kF32;
    case StDType::kF8E4M3:
      return DType::kFP8E4M3;
    case StDType::kI32:
      return DType::kI32;
    default:
      return std::nullopt;
  }
}

StDType to_st_dtype(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return StDType::kBF16;
    case DType::kF32:
      return StDType::kF32;
    case DType::kFP8E4M3:
      return StDType::kF8E4M3;
    case DType::kI32:
      return StDType::kI32;
  }
  throw Error("unknown dtype value " + std::to_string(static_cast<int>(dtype)));
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (std::int64_t extent : shape) n *= extent;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::ostringstream out;
  out << '[';
  for (std::size_t d = 0; d < shape.size(); ++d) out << (d ? ", " : "") << shape[d];
  out << ']';
  return out.str();
}

const TensorInfo* SafetensorsHeader::find(std::string_view name) const {
  const auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file,
                                           std::string_view file_name) {
  if (file.size() < 8) {
    fail(file_name, "truncated: " + std::to_string(file.size()) +
                        " bytes, shorter than the 8-byte header length");
  }
  const std::uint64_t header_bytes = read_u64_le(file.data());
  const std::uint64_t available = file.size() - 8;
  if (header_bytes > available) {
    fail(file_name, "header length " + std::to_string(header_bytes) + " is beyond the file (" +
                        std::to_string(available) +
                        " bytes after the length): truncated, or not a safetensors file");
  }
  if (header_bytes > kMaxHeaderBytes) {
    fail(file_name, "header length " + std::to_string(header_bytes) + " above the " +
                        std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  const char* text = reinterpret_cast<const char*>(file.data() + 8);
  if (header_bytes == 0 || text[0] != '{') {
    fail(file_name, "malformed JSON header: it does not start with '{'");
  }

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text, text + header_bytes);
  } catch (const nlohmann::json::exception& e) {
    fail(file_name, std::string("malformed JSON header: ") + e.what());
  }
  if (!json.is_object()) fail(file_name, "malformed JSON header: not a JSON object");

  SafetensorsHeader header;
  header.data_start = 8 + header_bytes;
  header.data_size = available - header_bytes;
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      parse_metadata(value, header, file_name);
      continue;
    }
    header.tensors.emplace(name, parse_tensor(name, value, header.data_size, file_name));
  }
  check_no_overlap(header, file_name);
  return header;
}

}  // namespace moerun::io
