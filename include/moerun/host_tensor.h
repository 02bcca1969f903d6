// HostTensor: an owning, contiguous host buffer with a TensorView over it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "moerun/tensor.h"

namespace moerun {

class HostTensor {
 public:
  HostTensor() = default;
  // Uninitialized storage: callers write every element they later read. Out of memory throws a
  // ResourceError naming the bytes, dtype and shape.
  HostTensor(DType dtype, const Shape& shape);
  // Zero-filled storage. Large tensors are mapped fresh from the OS, whose pages read as zero and
  // take memory only once written: a 10 GB tensor of which a few experts are filled costs those.
  static HostTensor zeros(DType dtype, const Shape& shape);
  HostTensor(HostTensor&&) noexcept = default;
  HostTensor& operator=(HostTensor&&) noexcept = default;
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;

  HostTensor clone() const;

  const TensorView& view() const { return view_; }
  template <class T>
  T* data() const {
    return view_.data_as<T>();
  }
  DType dtype() const { return view_.dtype(); }
  const Shape& shape() const { return view_.shape(); }
  std::int64_t size(int dim) const { return view_.size(dim); }
  std::int64_t numel() const { return view_.numel(); }
  std::size_t nbytes() const { return view_.nbytes(); }
  bool defined() const { return view_.defined(); }

 private:
  // Frees either kind of storage: aligned_alloc (mapped_bytes 0) or an anonymous mapping. (No
  // member initializer: GCC rejects default-constructing a nested class that has one before the
  // enclosing class is complete; value-initialization zeroes it.)
  struct Release {
    std::size_t mapped_bytes;
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte[], Release> storage_;
  TensorView view_;
};

}  // namespace moerun
