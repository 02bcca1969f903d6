#include <cuda_runtime.h>

#include <cmath>
#include <utility>

#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "cuda/runtime.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

enum class FillKind : int { kFp8Codes, kBf16Uniform, kF32Uniform, kF32Positive };

// Launch: grid-stride over n elements. Value i is a hash of (seed, i): independent of the launch.
__global__ void fill_kernel(void* data, long long n, unsigned long long seed, FillKind kind,
                            float scale) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const unsigned long long h = mix64(seed ^ mix64(static_cast<unsigned long long>(i)));
    const float u = static_cast<float>(h >> 40) * 0x1p-24f;  // [0, 1)
    switch (kind) {
      case FillKind::kFp8Codes: {
        auto code = static_cast<unsigned char>(h);
        if ((code & 0x7f) == 0x7f) code ^= 1;  // 0x7f / 0xff are NaN in e4m3fn
        static_cast<unsigned char*>(data)[i] = code;
        break;
      }
      case FillKind::kBf16Uniform: {
        const float v = (2.0f * u - 1.0f) * scale;
        static_cast<unsigned short*>(data)[i] =
            static_cast<unsigned short>(__float_as_uint(v) >> 16);
        break;
      }
      case FillKind::kF32Uniform:
        static_cast<float*>(data)[i] = (2.0f * u - 1.0f) * scale;
        break;
      case FillKind::kF32Positive:
        static_cast<float*>(data)[i] = scale * (0.5f + 0.5f * u);
        break;
    }
  }
}

void launch_fill(const TensorView& t, std::uint64_t seed, FillKind kind, float scale,
                 cudaStream_t stream) {
  check_arg(t.device().type == DeviceType::kCuda && t.is_contiguous(), "fill target",
            "a contiguous device tensor", t.shape_string());
  if (t.numel() == 0) return;
  fill_kernel<<<1024, 256, 0, stream>>>(t.data(), t.numel(), seed, kind, scale);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace

DeviceBuffer::DeviceBuffer(DType dtype, const Shape& shape) {
  const TensorView sized(nullptr, dtype, shape);
  MOERUN_CUDA_CHECK(cudaMalloc(&data_, sized.nbytes() > 0 ? sized.nbytes() : 1));
  view_ = TensorView(data_, dtype, shape, {DeviceType::kCuda, current_device()});
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);  // no throw from a destructor
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), view_(std::exchange(other.view_, {})) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(view_, other.view_);
  return *this;
}

DeviceBuffer DeviceBuffer::upload(const TensorView& host) {
  if (!host.defined()) return {};
  check_arg(host.device().type == DeviceType::kCpu && host.is_contiguous(), "upload source",
            "a contiguous host tensor", host.shape_string());
  DeviceBuffer buffer(host.dtype(), host.shape());
  if (host.nbytes() > 0) {
    MOERUN_CUDA_CHECK(cudaMemcpy(buffer.data_, host.data(), host.nbytes(), cudaMemcpyHostToDevice));
  }
  return buffer;
}

HostTensor DeviceBuffer::download() const {
  HostTensor host(view_.dtype(), view_.shape());
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  if (host.nbytes() > 0) {
    MOERUN_CUDA_CHECK(cudaMemcpy(host.view().data(), data_, host.nbytes(), cudaMemcpyDeviceToHost));
  }
  return host;
}

MoeWeights DeviceMoeWeights::view() const {
  return {w13.view(), w13_scale.view(), w2.view(), w2_scale.view(), correction_bias.view()};
}

DeviceMoeWeights upload_weights(const MoeWeights& host) {
  DeviceMoeWeights d;
  d.w13 = DeviceBuffer::upload(host.w13);
  d.w13_scale = DeviceBuffer::upload(host.w13_scale);
  d.w2 = DeviceBuffer::upload(host.w2);
  d.w2_scale = DeviceBuffer::upload(host.w2_scale);
  d.correction_bias = DeviceBuffer::upload(host.correction_bias);
  return d;
}

void fill_random(const TensorView& tensor, std::uint64_t seed, float scale, cudaStream_t stream) {
  switch (tensor.dtype()) {
    case DType::kFP8E4M3:
      launch_fill(tensor, seed, FillKind::kFp8Codes, scale, stream);
      return;
    case DType::kBF16:
      launch_fill(tensor, seed, FillKind::kBf16Uniform, scale, stream);
      return;
    case DType::kF32:
      launch_fill(tensor, seed, FillKind::kF32Uniform, scale, stream);
      return;
    default:
      break;
  }
  throw InvalidArgument("fill dtype", "fp8_e4m3, bf16 or f32", dtype_name(tensor.dtype()));
}

void fill_random_positive(const TensorView& tensor, std::uint64_t seed, float scale,
                          cudaStream_t stream) {
  check_arg(tensor.dtype() == DType::kF32, "fill dtype", "f32", dtype_name(tensor.dtype()));
  launch_fill(tensor, seed, FillKind::kF32Positive, scale, stream);
}

DeviceMoeWeights random_device_weights(const MoeConfig& config, int num_experts, std::uint64_t seed,
                                       cudaStream_t stream) {
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  const bool fp8 = config.is_fp8();
  DeviceMoeWeights w;
  w.w13 = DeviceBuffer(config.weight_dtype, {num_experts, 2 * inter, h});
  w.w2 = DeviceBuffer(config.weight_dtype, {num_experts, h, inter});
  const float std13 = 1.0f / std::sqrt(static_cast<float>(h));
  const float std2 = 1.0f / std::sqrt(static_cast<float>(inter));
  if (fp8) {
    // Codes spread over [-448, 448]; a block scale of ~std / 448 keeps the products O(1).
    w.w13_scale =
        DeviceBuffer(DType::kF32, {num_experts, 2 * inter / kQuantGroup, h / kQuantGroup});
    w.w2_scale = DeviceBuffer(DType::kF32, {num_experts, h / kQuantGroup, inter / kQuantGroup});
    fill_random(w.w13.view(), seed * 8 + 1, 0.0f, stream);
    fill_random(w.w2.view(), seed * 8 + 2, 0.0f, stream);
    fill_random_positive(w.w13_scale.view(), seed * 8 + 3, std13 / 448.0f, stream);
    fill_random_positive(w.w2_scale.view(), seed * 8 + 4, std2 / 448.0f, stream);
  } else {
    // Uniform in [-a, a] has standard deviation a / sqrt(3).
    fill_random(w.w13.view(), seed * 8 + 1, std13 * std::sqrt(3.0f), stream);
    fill_random(w.w2.view(), seed * 8 + 2, std2 * std::sqrt(3.0f), stream);
  }
  if (config.routing.mode == RoutingMode::kGroupedTopK) {
    w.correction_bias = DeviceBuffer(DType::kF32, {config.num_experts});
    // Small: a bias of +-0.1 would dominate the gaps between the top sigmoid scores and route
    // most tokens to the experts it favours (143 of 256 DeepSeek-V3 experts at T 8192); a
    // trained bias balances the load instead.
    fill_random(w.correction_bias.view(), seed * 8 + 5, 1e-4f, stream);
  }
  return w;
}

}  // namespace moerun::cuda
