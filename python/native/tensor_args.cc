#include "tensor_args.h"

#include <nanobind/ndarray.h>

#include <string>

#include "moerun/errors.h"

namespace nb = nanobind;

namespace moerun::python {

namespace {

constexpr int kDlCpu = 1;   // kDLCPU
constexpr int kDlCuda = 2;  // kDLCUDA

Device device_of(int type, int index, const char* name) {
  if (type == kDlCpu) return {DeviceType::kCpu, 0};
  if (type == kDlCuda) return {DeviceType::kCuda, index};
  throw InvalidArgument(std::string(name) + " device", "cpu or cuda (DLPack device type 1 or 2)",
                        "DLPack device type " + std::to_string(type));
}

DType dtype_of(nb::dlpack::dtype t, const char* name) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(t.code);
  if (t.lanes == 1) {
    if (code == Code::Float && t.bits == 32) return DType::kF32;
    if (code == Code::Bfloat && t.bits == 16) return DType::kBF16;
    if (code == Code::Float8_E4M3FN && t.bits == 8) return DType::kFP8E4M3;
    if (code == Code::Int && t.bits == 32) return DType::kI32;
  }
  throw InvalidArgument(
      std::string(name) + " dtype", "float32, bfloat16, float8_e4m3fn or int32",
      "DLPack type code " + std::to_string(t.code) + " with " + std::to_string(t.bits) + " bits");
}

// Shape has no constructor from a runtime rank.
Shape shape_from(const std::int64_t* e, std::size_t ndim, const char* name) {
  check_arg(ndim >= 1 && ndim <= kMaxTensorDims, std::string(name) + " rank", "1 to 4 dimensions",
            ndim);
  switch (ndim) {
    case 1:
      return {e[0]};
    case 2:
      return {e[0], e[1]};
    case 3:
      return {e[0], e[1], e[2]};
    default:
      return {e[0], e[1], e[2], e[3]};
  }
}

Shape shape_of(nb::handle shape, const char* name) {
  const auto extents = nb::cast<nb::tuple>(shape);
  std::int64_t e[kMaxTensorDims] = {};
  for (std::size_t d = 0; d < extents.size() && d < kMaxTensorDims; ++d) {
    e[d] = nb::cast<std::int64_t>(extents[d]);
  }
  return shape_from(e, extents.size(), name);
}

TensorView from_tuple(nb::tuple t, const char* name) {
  check_arg(t.size() == 5, name, "a (data_ptr, dtype, shape, device_type, device_index) tuple",
            std::to_string(t.size()) + " items");
  const auto ptr = nb::cast<std::uintptr_t>(t[0]);
  const auto dtype = nb::cast<int>(t[1]);
  check_arg(dtype >= 0 && dtype <= static_cast<int>(DType::kI32), std::string(name) + " dtype",
            "a moerun dtype code", dtype);
  const Device device = device_of(nb::cast<int>(t[3]), nb::cast<int>(t[4]), name);
  return TensorView(reinterpret_cast<void*>(ptr), static_cast<DType>(dtype), shape_of(t[2], name),
                    device);
}

TensorView from_dlpack(nb::handle obj, const char* name) {
  nb::ndarray<> a;
  if (!nb::try_cast(obj, a)) {
    throw InvalidArgument(name, "a tensor (DLPack or buffer protocol) or None",
                          nb::type_name(obj.type()).c_str());
  }
  const auto ndim = static_cast<int>(a.ndim());
  std::int64_t e[kMaxTensorDims] = {};
  for (int d = 0; d < ndim && d < kMaxTensorDims; ++d) {
    e[d] = static_cast<std::int64_t>(a.shape(static_cast<std::size_t>(d)));
  }
  const Shape shape = shape_from(e, static_cast<std::size_t>(ndim), name);
  std::int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    const auto extent = static_cast<std::int64_t>(a.shape(static_cast<std::size_t>(d)));
    if (extent != 1 && a.stride(static_cast<std::size_t>(d)) != expected) {
      throw InvalidArgument(std::string(name) + " layout", "contiguous (row-major)", "strided");
    }
    expected *= extent;
  }
  return TensorView(a.data(), dtype_of(a.dtype(), name), shape,
                    device_of(a.device_type(), a.device_id(), name));
}

}  // namespace

TensorView tensor_arg(nb::handle obj, const char* name) {
  if (obj.is_none()) return {};
  if (nb::isinstance<nb::tuple>(obj)) return from_tuple(nb::borrow<nb::tuple>(obj), name);
  return from_dlpack(obj, name);
}

void add_dtype_codes(nb::module_& m) {
  m.attr("DTYPE_F32") = static_cast<int>(DType::kF32);
  m.attr("DTYPE_BF16") = static_cast<int>(DType::kBF16);
  m.attr("DTYPE_FP8_E4M3") = static_cast<int>(DType::kFP8E4M3);
  m.attr("DTYPE_I32") = static_cast<int>(DType::kI32);
}

}  // namespace moerun::python
