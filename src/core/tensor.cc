#include "moerun/tensor.h"

#include <sstream>

#include "moerun/errors.h"

namespace moerun {

std::string device_name(Device device) {
  return device.type == DeviceType::kCpu ? "cpu" : "cuda:" + std::to_string(device.index);
}

Shape::Shape(std::initializer_list<std::int64_t> extents)
    : ndim_(static_cast<int>(extents.size())) {
  check_arg(ndim_ <= kMaxTensorDims, "tensor rank", "at most 4 dimensions", ndim_);
  int dim = 0;
  for (std::int64_t extent : extents) {
    check_arg(extent >= 0, "tensor extent", "a non-negative size", extent);
    extents_[dim++] = extent;
  }
}

std::int64_t Shape::numel() const {
  if (ndim_ == 0) return 0;
  std::int64_t n = 1;
  for (int d = 0; d < ndim_; ++d) n *= extents_[d];
  return n;
}

std::string Shape::to_string() const {
  std::ostringstream out;
  out << '[';
  for (int d = 0; d < ndim_; ++d) out << (d ? ", " : "") << extents_[d];
  out << ']';
  return out.str();
}

TensorView::TensorView(void* data, DType dtype, const Shape& shape, Device device)
    : data_(data), dtype_(dtype), device_(device), shape_(shape) {
  std::int64_t stride = 1;
  for (int d = shape_.ndim() - 1; d >= 0; --d) {
    strides_[d] = stride;
    stride *= shape_[d];
  }
}

bool TensorView::is_contiguous() const {
  std::int64_t expected = 1;
  for (int d = ndim() - 1; d >= 0; --d) {
    if (shape_[d] != 1 && strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

namespace {
// The checks of both overloads; `index` < 0 accepts any device index. Messages are built only on
// failure: forwards run these on every call.
void check_view(const TensorView& view, std::string_view name, DType dtype, const Shape& shape,
                DeviceType type, int index) {
  const auto field = [&](std::string_view what) { return std::string(name) + std::string(what); };
  if (!view.defined()) throw InvalidArgument(name, "a tensor", "none");
  if (view.dtype() != dtype) {
    throw InvalidArgument(field(" dtype"), dtype_name(dtype), dtype_name(view.dtype()));
  }
  if (view.shape() != shape) {
    throw InvalidArgument(field(" shape"), shape.to_string(), view.shape_string());
  }
  if (!view.is_contiguous()) {
    throw InvalidArgument(field(" layout"), "contiguous (row-major)", "strided");
  }
  if (view.device().type != type || (index >= 0 && view.device().index != index)) {
    const std::string expected = index >= 0                 ? device_name({type, index})
                                 : type == DeviceType::kCpu ? "cpu"
                                                            : "cuda";
    throw InvalidArgument(field(" device"), expected, device_name(view.device()));
  }
  if (view.numel() != 0 && view.data() == nullptr) {
    throw InvalidArgument(field(" data"), "a non-null pointer", "null");
  }
}
}  // namespace

void check_tensor(const TensorView& view, std::string_view name, DType dtype, const Shape& shape,
                  DeviceType device_type) {
  check_view(view, name, dtype, shape, device_type, -1);
}

void check_tensor(const TensorView& view, std::string_view name, DType dtype, const Shape& shape,
                  Device device) {
  check_view(view, name, dtype, shape, device.type, device.index);
}

}  // namespace moerun
