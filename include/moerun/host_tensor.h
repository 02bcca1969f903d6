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
  struct FreeAligned {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte[], FreeAligned> storage_;
  TensorView view_;
};

}  // namespace moerun
