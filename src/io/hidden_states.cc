#include "io/hidden_states.h"

#include "core/checks.h"
#include "io/convert.h"
#include "io/safetensors.h"
#include "moerun/errors.h"

namespace moerun::io {

HostTensor read_hidden_states(const std::filesystem::path& path, std::int64_t hidden_size,
                              bool check_finite) {
  const SafetensorsFile file(path);
  const auto& tensors = file.header().tensors;
  if (tensors.size() != 1) {
    std::string names;
    for (const auto& [name, t] : tensors) names += (names.empty() ? "'" : ", '") + name + "'";
    throw InvalidArgument(
        "hidden states in " + file.path(), "exactly one [T, H] tensor",
        std::to_string(tensors.size()) + " tensors" + (names.empty() ? "" : " (" + names + ")"));
  }
  const TensorInfo& t = tensors.begin()->second;
  const std::string where = "'" + t.name + "' in " + file.path();
  check_arg(t.shape.size() == 2 && t.shape[1] == hidden_size, "shape of tensor " + where,
            "[T, " + std::to_string(hidden_size) + "] (hidden_size from config.json)",
            t.shape_string());
  if (t.dtype != StDType::kBF16 && t.dtype != StDType::kF16 && t.dtype != StDType::kF32) {
    throw Error("unsupported dtype of tensor " + where + ": expected BF16, F16 or F32, got " +
                std::string(st_dtype_name(t.dtype)));
  }
  HostTensor out(DType::kBF16, {t.shape[0], hidden_size});
  convert_to_bf16(file.bytes(t).data(), t.dtype, t.numel(), out.data<bf16>());
  if (check_finite) {
    if (const auto bad = detail::first_non_finite(out.view())) {
      throw InvalidArgument(
          "element " + detail::index_text(out.shape(), *bad) + " of tensor " + where,
          detail::kFiniteValue,
          detail::value_text(out.view(), *bad) +
              (t.dtype == StDType::kBF16
                   ? std::string()
                   : " (after rounding " + std::string(st_dtype_name(t.dtype)) + " to bf16)"));
    }
  }
  return out;
}

}  // namespace moerun::io
