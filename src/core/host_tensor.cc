#include "moerun/host_tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace moerun {

namespace {
// A cache line, and enough for any vector load the CPU oracle does.
constexpr std::size_t kHostAlignment = 64;

std::byte* allocate_aligned(std::size_t bytes) {
  const std::size_t rounded = (bytes / kHostAlignment + 1) * kHostAlignment;
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(kHostAlignment, rounded));
  if (raw == nullptr) throw std::bad_alloc();
  return raw;
}
}  // namespace

void HostTensor::FreeAligned::operator()(std::byte* p) const { std::free(p); }

HostTensor::HostTensor(DType dtype, const Shape& shape) {
  const TensorView sized(nullptr, dtype, shape);
  storage_.reset(allocate_aligned(sized.nbytes()));
  view_ = TensorView(storage_.get(), dtype, shape);
}

HostTensor HostTensor::clone() const {
  HostTensor copy(dtype(), shape());
  if (nbytes() > 0) std::memcpy(copy.view_.data(), view_.data(), nbytes());
  return copy;
}

}  // namespace moerun
