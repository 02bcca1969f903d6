// Finiteness check kernel: a grid-stride scan of up to kMaxCheckSegments device tensors for their
// first NaN, infinity (or, for FP8 block scales, value <= 0).
//
// Launch: 256 threads; each segment gets its own run of blocks (at most kMaxBlocksPerSegment),
// which walk it in 16-byte vectors when it is 16-byte aligned, element by element otherwise. A
// finding is the key index * 4 + kind, so a minimum over keys is the first bad index. Each block
// reduces its threads' minima and takes an atomicMax of ~key into the launch's state (device
// memory zeroed just before on the stream: 0 means nothing found); the last block to finish (a
// ticket counter in the same state, the threadfence-reduction pattern) folds what was found into
// the host-visible findings with plain stores, the launch's one writer.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/finite_check.h"
#include "cuda/workspace.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerSegment = 1024;
constexpr unsigned long long kNone = ~0ull;

enum ElementKind : int { kBf16, kF32, kFp8, kScale };

struct Segment {
  const void* data;
  long long count;
  int kind;
  int tensor;
  int first_block;
  int blocks;
};

struct Params {
  Segment segments[kMaxCheckSegments];
  int num_segments;
  int total_blocks;
  unsigned long long* inverted;  // [kNumCheckedTensors] device: ~(first key), 0 = nothing yet
  unsigned int* ticket;          // device, 0 at the launch
  unsigned long long* found;     // [kNumCheckedTensors] mapped host memory, kNone = nothing
};

static_assert(kFiniteCheckStateBytes == (kNumCheckedTensors + 1) * sizeof(unsigned long long),
              "cuda/workspace.h reserves the check's state: the minima, then the ticket");

// The BadValue of an f32 (as bits) that is bad, or -1 when it is fine.
__device__ __forceinline__ int f32_bad(unsigned int bits, bool scale) {
  if ((bits & 0x7f800000u) == 0x7f800000u) {
    if (bits & 0x007fffffu) return static_cast<int>(BadValue::kNan);
    return static_cast<int>((bits >> 31) ? BadValue::kNegativeInfinity
                                         : BadValue::kPositiveInfinity);
  }
  if (scale && ((bits >> 31) != 0 || (bits & 0x7fffffffu) == 0)) {
    return static_cast<int>(BadValue::kNotPositive);
  }
  return -1;
}

__device__ __forceinline__ int element_bad(const void* data, long long i, int kind) {
  switch (kind) {
    case kBf16:
      return f32_bad(static_cast<unsigned int>(static_cast<const unsigned short*>(data)[i]) << 16,
                     false);
    case kFp8:
      return (static_cast<const unsigned char*>(data)[i] & 0x7f) == 0x7f
                 ? static_cast<int>(BadValue::kNan)
                 : -1;
    default:
      return f32_bad(static_cast<const unsigned int*>(data)[i], kind == kScale);
  }
}

// The first bad element among the 16 bytes at vector v, as a key; kNone when all are fine.
__device__ __forceinline__ unsigned long long vector_key(const Segment& s, long long v) {
  const uint4 word = static_cast<const uint4*>(s.data)[v];
  const unsigned int words[4] = {word.x, word.y, word.z, word.w};
  const int per_word = s.kind == kBf16 ? 2 : s.kind == kFp8 ? 4 : 1;
  for (int w = 0; w < 4; ++w) {
    for (int j = 0; j < per_word; ++j) {
      int bad;
      if (s.kind == kBf16) {
        bad = f32_bad((words[w] >> (16 * j)) << 16, false);
      } else if (s.kind == kFp8) {
        bad = ((words[w] >> (8 * j)) & 0x7f) == 0x7f ? static_cast<int>(BadValue::kNan) : -1;
      } else {
        bad = f32_bad(words[w], s.kind == kScale);
      }
      if (bad >= 0) {
        const long long index = v * (4 * per_word) + w * per_word + j;
        return static_cast<unsigned long long>(index) * 4 + static_cast<unsigned long long>(bad);
      }
    }
  }
  return kNone;
}

__global__ void __launch_bounds__(kThreads) finite_check_kernel(Params p) {
  int s = 0;
  while (s + 1 < p.num_segments && static_cast<int>(blockIdx.x) >= p.segments[s + 1].first_block) {
    ++s;
  }
  const Segment seg = p.segments[s];
  const long long thread =
      static_cast<long long>(blockIdx.x - seg.first_block) * kThreads + threadIdx.x;
  const long long stride = static_cast<long long>(seg.blocks) * kThreads;
  const int elem_bytes = seg.kind == kBf16 ? 2 : seg.kind == kFp8 ? 1 : 4;
  const long long per_vector = 16 / elem_bytes;
  // A thread's indices only grow, so its first finding is its smallest: it stops there.
  unsigned long long key = kNone;
  long long scalar_from = 0;
  if (reinterpret_cast<unsigned long long>(seg.data) % 16 == 0) {
    const long long vectors = seg.count / per_vector;
    for (long long v = thread; v < vectors && key == kNone; v += stride) key = vector_key(seg, v);
    scalar_from = vectors * per_vector;
  }
  for (long long i = scalar_from + thread; i < seg.count && key == kNone; i += stride) {
    const int bad = element_bad(seg.data, i, seg.kind);
    if (bad >= 0)
      key = static_cast<unsigned long long>(i) * 4 + static_cast<unsigned long long>(bad);
  }

  __shared__ unsigned long long warp_min[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    key = min(key, __shfl_xor_sync(0xffffffffu, key, offset));
  }
  if (threadIdx.x % 32 == 0) warp_min[threadIdx.x / 32] = key;
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) {
    unsigned long long block_min = kNone;
    for (int w = 0; w < kThreads / 32; ++w) block_min = min(block_min, warp_min[w]);
    // The first key wins: the largest of the inverted keys.
    if (block_min != kNone) atomicMax(&p.inverted[seg.tensor], ~block_min);
    // The minimum is visible device-wide before this block's ticket is.
    __threadfence();
    last = atomicAdd(p.ticket, 1u) == static_cast<unsigned int>(p.total_blocks - 1);
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  __threadfence();
  for (int t = 0; t < kNumCheckedTensors; ++t) {
    const unsigned long long inverted = atomicOr(&p.inverted[t], 0ull);  // a coherent read
    // NOTE: host memory is read over the bus only when there is something to record, so that a
    // clean check costs no host round trip. The launch's one writer of the host copy; the host
    // only ever clears it.
    if (inverted == 0) continue;
    volatile unsigned long long* found = p.found + t;
    if (~inverted < *found) *found = ~inverted;
  }
  __threadfence_system();
}

int element_kind(const CheckSegment& s) {
  if (s.scale) {
    check_arg(s.view.dtype() == DType::kF32, "checked scale dtype", "f32",
              dtype_name(s.view.dtype()));
    return kScale;
  }
  switch (s.view.dtype()) {
    case DType::kBF16:
      return kBf16;
    case DType::kF32:
      return kF32;
    case DType::kFP8E4M3:
      return kFp8;
    default:
      throw InvalidArgument("checked tensor dtype", "bf16, f32 or fp8_e4m3",
                            dtype_name(s.view.dtype()));
  }
}

}  // namespace

std::string_view checked_tensor_name(CheckedTensor tensor) {
  switch (tensor) {
    case CheckedTensor::kHiddenStates:
      return "hidden_states";
    case CheckedTensor::kRouterLogits:
      return "router_logits";
    case CheckedTensor::kTopkWeights:
      return "topk_weights";
    case CheckedTensor::kW13:
      return "w13";
    case CheckedTensor::kW13Scale:
      return "w13_scale";
    case CheckedTensor::kW2:
      return "w2";
    case CheckedTensor::kW2Scale:
      return "w2_scale";
    case CheckedTensor::kCorrectionBias:
      return "correction_bias";
    case CheckedTensor::kHiddenStatesScale:
      return "hidden_states scale";
  }
  return "unknown";
}

std::string_view bad_value_text(BadValue value) {
  switch (value) {
    case BadValue::kNan:
      return "nan";
    case BadValue::kPositiveInfinity:
      return "inf";
    case BadValue::kNegativeInfinity:
      return "-inf";
    case BadValue::kNotPositive:
      return "<= 0";
  }
  return "?";
}

FiniteCheck::FiniteCheck() {
  constexpr std::size_t bytes = kNumCheckedTensors * sizeof(unsigned long long);
  MOERUN_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_), bytes, cudaHostAllocMapped));
  for (int t = 0; t < kNumCheckedTensors; ++t) host_[t] = kNone;
  MOERUN_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped_), host_, 0));
}

FiniteCheck::~FiniteCheck() {
  if (host_ != nullptr) cudaFreeHost(host_);  // no throw from a destructor
}

void FiniteCheck::enqueue(std::span<const CheckSegment> segments, void* state,
                          cudaStream_t stream) const {
  check_arg(segments.size() <= static_cast<std::size_t>(kMaxCheckSegments), "checked tensors",
            "at most " + std::to_string(kMaxCheckSegments), segments.size());
  Params p{};
  int blocks = 0;
  for (const CheckSegment& s : segments) {
    check_arg(s.view.device().type == DeviceType::kCuda && s.view.is_contiguous(),
              std::string(checked_tensor_name(s.tensor)), "a contiguous device tensor",
              device_name(s.view.device()));
    const int kind = element_kind(s);
    if (s.view.numel() == 0) continue;
    const long long elems_per_block =
        static_cast<long long>(kThreads) * 16 / static_cast<long long>(dtype_size(s.view.dtype()));
    const int segment_blocks = static_cast<int>(std::min<long long>(
        kMaxBlocksPerSegment, (s.view.numel() + elems_per_block - 1) / elems_per_block));
    p.segments[p.num_segments++] = {s.view.data(), s.view.numel(), kind, static_cast<int>(s.tensor),
                                    blocks,        segment_blocks};
    blocks += segment_blocks;
  }
  if (blocks == 0) return;
  check_arg(state != nullptr, "finiteness check state", "device memory", "none");
  MOERUN_CUDA_CHECK(cudaMemsetAsync(state, 0, kFiniteCheckStateBytes, stream));
  p.total_blocks = blocks;
  p.inverted = static_cast<unsigned long long*>(state);
  p.ticket = reinterpret_cast<unsigned int*>(p.inverted + kNumCheckedTensors);
  p.found = mapped_;
  finite_check_kernel<<<blocks, kThreads, 0, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

std::optional<Finding> FiniteCheck::take() const {
  std::optional<Finding> first;
  for (int t = 0; t < kNumCheckedTensors; ++t) {
    // One taker per finding, whatever the threads: an atomic exchange of the host copy.
    const unsigned long long key = std::atomic_ref<unsigned long long>(host_[t]).exchange(kNone);
    if (key == kNone) continue;
    if (!first) {
      first = Finding{static_cast<CheckedTensor>(t), static_cast<std::int64_t>(key / 4),
                      static_cast<BadValue>(key % 4)};
    }
  }
  return first;
}

}  // namespace moerun::cuda
