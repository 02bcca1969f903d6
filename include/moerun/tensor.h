// TensorView: a non-owning, typed, strided view of memory on one device.
//
// Kernels and the CPU oracle take views; who owns the memory is the caller's business
// (HostTensor for host buffers, the CUDA backend's allocations for device buffers).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "moerun/dtype.h"

namespace moerun {

enum class DeviceType : std::uint8_t { kCpu, kCuda };

struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;
  friend bool operator==(const Device&, const Device&) = default;
};

std::string device_name(Device device);

inline constexpr int kMaxTensorDims = 4;

// Extents of up to kMaxTensorDims dimensions, outermost first.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> extents);
  int ndim() const { return ndim_; }
  std::int64_t operator[](int dim) const { return extents_[dim]; }
  std::int64_t numel() const;
  // "[4, 128]"
  std::string to_string() const;
  friend bool operator==(const Shape&, const Shape&) = default;

 private:
  int ndim_ = 0;
  std::array<std::int64_t, kMaxTensorDims> extents_{};
};

class TensorView {
 public:
  TensorView() = default;
  // A contiguous (row-major) view.
  TensorView(void* data, DType dtype, const Shape& shape, Device device = {});

  void* data() const { return data_; }
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  std::int64_t size(int dim) const { return shape_[dim]; }
  std::int64_t stride(int dim) const { return strides_[dim]; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  // An unset view (no data, no dims) stands for an absent optional tensor.
  bool defined() const { return ndim() > 0 || data_ != nullptr; }

  std::string shape_string() const { return shape_.to_string(); }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_{};
  Shape shape_;
  std::array<std::int64_t, kMaxTensorDims> strides_{};
};

// Rejects `view` (named `name` in the message) unless it is a contiguous tensor of `dtype` with
// exactly `shape`, on a device of `device_type`.
void check_tensor(const TensorView& view, std::string_view name, DType dtype, const Shape& shape,
                  DeviceType device_type);
// The same, on exactly `device` (type and index).
void check_tensor(const TensorView& view, std::string_view name, DType dtype, const Shape& shape,
                  Device device);

}  // namespace moerun
