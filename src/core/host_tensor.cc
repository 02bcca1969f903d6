#include "moerun/host_tensor.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "moerun/errors.h"

namespace moerun {

namespace {
// A cache line, and enough for any vector load the CPU oracle does.
constexpr std::size_t kHostAlignment = 64;

// "34359738368 bytes (32.0 GiB)"
std::string byte_count(std::size_t bytes) {
  char gib[32];
  std::snprintf(gib, sizeof(gib), " (%.1f GiB)", static_cast<double>(bytes) / (1ull << 30));
  return std::to_string(bytes) + " bytes" + gib;
}

// `view` says what the bytes are for, so that running out of memory names the tensor's size,
// dtype and shape instead of a bare std::bad_alloc.
std::byte* allocate_aligned(const TensorView& view) {
  const std::size_t bytes = view.nbytes();
  const std::size_t rounded = (bytes / kHostAlignment + 1) * kHostAlignment;
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(kHostAlignment, rounded));
  if (raw == nullptr) {
    throw ResourceError("out of host memory: cannot allocate " + byte_count(bytes) + " for a " +
                        std::string(dtype_name(view.dtype())) + " " + view.shape_string() +
                        " tensor");
  }
  return raw;
}
}  // namespace

void HostTensor::FreeAligned::operator()(std::byte* p) const { std::free(p); }

HostTensor::HostTensor(DType dtype, const Shape& shape) {
  const TensorView sized(nullptr, dtype, shape);
  storage_.reset(allocate_aligned(sized));
  view_ = TensorView(storage_.get(), dtype, shape);
}

HostTensor HostTensor::clone() const {
  HostTensor copy(dtype(), shape());
  if (nbytes() > 0) std::memcpy(copy.view_.data(), view_.data(), nbytes());
  return copy;
}

}  // namespace moerun
