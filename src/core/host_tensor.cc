#include "moerun/host_tensor.h"

#include <sys/mman.h>

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

// Out of memory names the tensor's size, dtype and shape instead of a bare std::bad_alloc.
[[noreturn]] void out_of_memory(const TensorView& sized) {
  throw ResourceError("out of host memory: cannot allocate " + byte_count(sized.nbytes()) +
                      " for a " + std::string(dtype_name(sized.dtype())) + " " +
                      sized.shape_string() + " tensor");
}

std::byte* allocate_aligned(const TensorView& sized) {
  const std::size_t rounded = (sized.nbytes() / kHostAlignment + 1) * kHostAlignment;
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(kHostAlignment, rounded));
  if (raw == nullptr) out_of_memory(sized);
  return raw;
}
}  // namespace

void HostTensor::Release::operator()(std::byte* p) const {
  if (mapped_bytes > 0) {
    munmap(p, mapped_bytes);
  } else {
    std::free(p);
  }
}

HostTensor::HostTensor(DType dtype, const Shape& shape) {
  const TensorView sized(nullptr, dtype, shape);
  storage_.reset(allocate_aligned(sized));
  view_ = TensorView(storage_.get(), dtype, shape);
}

HostTensor HostTensor::zeros(DType dtype, const Shape& shape) {
  // Below this, an ordinary allocation and a memset cost nothing worth a mapping.
  constexpr std::size_t kMapFrom = std::size_t{1} << 20;
  const TensorView sized(nullptr, dtype, shape);
  const std::size_t bytes = sized.nbytes();
  HostTensor t;
  if (bytes < kMapFrom) {
    t = HostTensor(dtype, shape);
    std::memset(t.storage_.get(), 0, bytes);
    return t;
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) out_of_memory(sized);
  t.storage_ = std::unique_ptr<std::byte[], Release>(static_cast<std::byte*>(p), Release{bytes});
  t.view_ = TensorView(p, dtype, shape);
  return t;
}

HostTensor HostTensor::clone() const {
  HostTensor copy(dtype(), shape());
  if (nbytes() > 0) std::memcpy(copy.view_.data(), view_.data(), nbytes());
  return copy;
}

}  // namespace moerun
