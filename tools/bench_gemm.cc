#include "bench_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <utility>

#include "bench_timing.h"
#include "core/scale_layout.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_heuristics.h"
#include "moerun/dtype.h"
#include "moerun/errors.h"
#include "moerun/host_tensor.h"

namespace moerun::tools {

namespace {

using cuda::DeviceBuffer;

constexpr int kMaxInputSets = 16;

// Forces one variant (cuda/gemm_heuristics.h) for the scope; -1 leaves the heuristic's choice.
class ForcedVariant {
 public:
  explicit ForcedVariant(int variant) : forced_(variant >= 0) {
    if (forced_) cuda::force_gemm_variant_for_testing(variant);
  }
  ~ForcedVariant() {
    if (forced_) cuda::force_gemm_variant_for_testing(-1);
  }
  ForcedVariant(const ForcedVariant&) = delete;
  ForcedVariant& operator=(const ForcedVariant&) = delete;

 private:
  bool forced_;
};

std::int64_t round_up(std::int64_t x, std::int64_t to) { return (x + to - 1) / to * to; }

// Rows of A holding tokens for group `g`, row `i` < m.
std::int64_t a_row(const GemmBenchShape& s, std::int64_t g, std::int64_t i) {
  return s.layout == Layout::kMasked ? g * s.m_max + i
                                     : g * round_up(s.m, cuda::kGemmContiguousAlignM) + i;
}

template <class T>
std::vector<T> download(const void* device, std::int64_t offset, std::int64_t count) {
  std::vector<T> host(static_cast<std::size_t>(count));
  MOERUN_CUDA_CHECK(cudaMemcpy(host.data(), static_cast<const T*>(device) + offset,
                               host.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// The same device memory seen as `shape` (contiguous, same element count).
TensorView reshaped(const TensorView& v, const Shape& shape) {
  return TensorView(v.data(), v.dtype(), shape, v.device());
}

double element(const std::vector<std::uint8_t>& fp8_row, const std::vector<bf16>& bf16_row,
               bool fp8, std::size_t j) {
  return fp8 ? fp8e4m3_to_float(fp8e4m3{fp8_row[j]}) : bf16_to_float(bf16_row[j]);
}

}  // namespace

std::size_t GemmBench::set_bytes(const GemmBenchShape& s, bool fp8) {
  const auto rows = static_cast<std::size_t>(s.a_rows()), g = static_cast<std::size_t>(s.groups),
             n = static_cast<std::size_t>(s.n), k = static_cast<std::size_t>(s.k);
  const std::size_t elem = fp8 ? 1 : 2;
  std::size_t bytes = rows * k * elem + g * n * k * elem + rows * n * 2;
  if (fp8) bytes += rows * (k / kQuantGroup) * 4 + g * (n / kQuantGroup) * (k / kQuantGroup) * 4;
  return bytes;
}

int GemmBench::input_sets(const GemmBenchShape& s, bool fp8, int l2_bytes, std::size_t free_bytes) {
  const std::size_t per_set = std::max<std::size_t>(1, set_bytes(s, fp8));
  const std::size_t wanted = (2 * static_cast<std::size_t>(l2_bytes) + per_set - 1) / per_set;
  const auto fits = static_cast<std::size_t>(0.9 * static_cast<double>(free_bytes)) / per_set;
  return static_cast<int>(std::min<std::size_t>({wanted, kMaxInputSets, fits}));
}

GemmBench::GemmBench(const GemmBenchShape& s, bool fp8, int input_sets, std::uint64_t seed,
                     cudaStream_t stream)
    : s_(s), fp8_(fp8), stream_(stream) {
  check_arg(input_sets >= 1, "input sets", ">= 1", input_sets);
  const DType dtype = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  const std::int64_t rows = s.a_rows(), kb = s.k / kQuantGroup, nb = s.n / kQuantGroup;
  const float inv_sqrt_k = 1.0f / std::sqrt(static_cast<float>(s.k));
  for (int i = 0; i < input_sets; ++i) {
    InputSet set;
    set.a = DeviceBuffer(dtype, {rows, s.k});
    set.b = DeviceBuffer(dtype, {s.groups, s.n, s.k});
    set.out = DeviceBuffer(DType::kBF16, {rows, s.n});
    const std::uint64_t base = seed * 1000 + 10 * static_cast<std::uint64_t>(i);
    if (fp8) {
      // Codes spread over [-448, 448]; scales of ~1/448 (A) and ~1/(448 sqrt(K)) (B) keep the
      // products O(1), as for the layer's random weights.
      // MN-major (core/scale_layout.h): masked [groups, K / 128, M_max], contiguous [K / 128,
      // rows].
      set.a_scale = s.layout == Layout::kMasked ? DeviceBuffer(DType::kF32, {s.groups, kb, s.m_max})
                                                : DeviceBuffer(DType::kF32, {kb, rows});
      set.b_scale = DeviceBuffer(DType::kF32, {s.groups, nb, kb});
      cuda::fill_random(set.a.view(), base + 1, 0.0f, stream);
      cuda::fill_random(set.b.view(), base + 2, 0.0f, stream);
      cuda::fill_random_positive(set.a_scale.view(), base + 3, 2.0f / 448.0f, stream);
      cuda::fill_random_positive(set.b_scale.view(), base + 4, 2.0f * inv_sqrt_k / 448.0f, stream);
    } else {
      // Uniform in [-a, a] has standard deviation a / sqrt(3): A ~1, B ~1/sqrt(K).
      cuda::fill_random(set.a.view(), base + 1, std::sqrt(3.0f), stream);
      cuda::fill_random(set.b.view(), base + 2, std::sqrt(3.0f) * inv_sqrt_k, stream);
    }
    sets_.push_back(std::move(set));
  }
  if (s.layout == Layout::kMasked) {
    HostTensor masked_m(DType::kI32, {s.groups});
    for (std::int64_t g = 0; g < s.groups; ++g) masked_m.data<int>()[g] = static_cast<int>(s.m);
    masked_m_ = DeviceBuffer::upload(masked_m.view());
  } else {
    // Each group's m rows, then -1 up to the next multiple of 128 (never computed).
    HostTensor m_indices(DType::kI32, {rows});
    const std::int64_t segment = round_up(s.m, cuda::kGemmContiguousAlignM);
    for (std::int64_t r = 0; r < rows; ++r) {
      m_indices.data<int>()[r] = r % segment < s.m ? static_cast<int>(r / segment) : -1;
    }
    m_indices_ = DeviceBuffer::upload(m_indices.view());
  }
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void GemmBench::launch(const InputSet& set) const {
  const cuda::GemmOperand b{set.b.view(), fp8_ ? set.b_scale.view() : TensorView()};
  if (s_.layout == Layout::kMasked) {
    const cuda::GemmOperand a{reshaped(set.a.view(), {s_.groups, s_.m_max, s_.k}),
                              fp8_ ? set.a_scale.view() : TensorView()};
    cuda::grouped_gemm_masked(a, b, masked_m_.view(),
                              reshaped(set.out.view(), {s_.groups, s_.m_max, s_.n}), nullptr,
                              stream_, s_.m);
  } else {
    const cuda::GemmOperand a{set.a.view(), fp8_ ? set.a_scale.view() : TensorView()};
    cuda::grouped_gemm_contiguous(a, b, m_indices_.view(), set.out.view(), stream_);
  }
}

GemmBenchResult GemmBench::time(int forced, int repeat, const TensorView& flush,
                                SmClockSampler& clock) {
  GemmBenchResult r;
  const cuda::GemmChoice choice =
      s_.layout == Layout::kMasked
          ? cuda::grouped_gemm_masked_variant(fp8_, s_.groups, s_.m_max, s_.n, s_.k, s_.m)
          : cuda::grouped_gemm_contiguous_variant(fp8_, s_.a_rows(), s_.n, s_.k);
  r.heuristic_variant = cuda::gemm_variant_name(choice.variant);
  r.heuristic_reason = choice.reason;
  r.heuristic = forced < 0 || forced == static_cast<int>(choice.variant);
  r.variant = forced < 0 ? r.heuristic_variant
                         : cuda::gemm_variant_name(static_cast<cuda::sm90::GemmVariant>(forced));
  r.input_sets = static_cast<int>(sets_.size());
  const double g = static_cast<double>(s_.groups), m = static_cast<double>(s_.m),
               n = static_cast<double>(s_.n), k = static_cast<double>(s_.k);
  r.flops = 2.0 * g * m * n * k;
  r.bytes = g * (m * k + n * k) * (fp8_ ? 1.0 : 2.0) + g * 2.0 * m * n;

  const ForcedVariant scope(forced);
  const std::size_t count = sets_.size();
  auto run = [&](int i) { launch(sets_[static_cast<std::size_t>(i) % count]); };
  std::function<void(int)> before;
  if (flush.defined()) {
    before = [&](int) {
      MOERUN_CUDA_CHECK(cudaMemsetAsync(flush.data(), 0, flush.nbytes(), stream_));
    };
  }
  // Warm-up: every set once (first touches, module load), at least 3 launches.
  clock.start();
  r.us = median_event_ms(run, std::max<int>(3, static_cast<int>(count)), repeat, stream_, before) *
         1e3;
  r.sm_mhz = clock.stop();
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check(r);
  return r;
}

void GemmBench::check(GemmBenchResult& r) const {
  const InputSet& set = sets_.front();
  const std::int64_t k = s_.k, n = s_.n, kb = k / kQuantGroup, nb = n / kQuantGroup;
  double diff = 0, norm = 0;
  int sampled = 0;
  for (const std::int64_t g : {std::int64_t{0}, s_.groups - 1}) {
    for (const std::int64_t i : {std::int64_t{0}, s_.m - 1}) {
      const std::int64_t row = a_row(s_, g, i);
      std::vector<std::uint8_t> a8;
      std::vector<bf16> a16;
      std::vector<float> sa;
      if (fp8_) {
        a8 = download<std::uint8_t>(set.a.view().data(), row * k, k);
        const ActScaleLayout layout{s_.layout == Layout::kMasked ? s_.m_max : s_.a_rows(), kb};
        for (std::int64_t blk = 0; blk < kb; ++blk) {
          sa.push_back(download<float>(set.a_scale.view().data(), layout.index(row, blk), 1)[0]);
        }
      } else {
        a16 = download<bf16>(set.a.view().data(), row * k, k);
      }
      for (const std::int64_t col : {std::int64_t{0}, n / 2, n - 1}) {
        const std::int64_t b_row = g * n + col;
        std::vector<std::uint8_t> b8;
        std::vector<bf16> b16;
        std::vector<float> sb;
        if (fp8_) {
          b8 = download<std::uint8_t>(set.b.view().data(), b_row * k, k);
          sb = download<float>(set.b_scale.view().data(), (g * nb + col / kQuantGroup) * kb, kb);
        } else {
          b16 = download<bf16>(set.b.view().data(), b_row * k, k);
        }
        double ref = 0;
        for (std::int64_t blk = 0; blk * kQuantGroup < k; ++blk) {
          double part = 0;
          const std::int64_t end = std::min(k, (blk + 1) * kQuantGroup);
          for (std::int64_t j = blk * kQuantGroup; j < end; ++j) {
            const auto u = static_cast<std::size_t>(j);
            part += element(a8, a16, fp8_, u) * element(b8, b16, fp8_, u);
          }
          const auto b = static_cast<std::size_t>(blk);
          ref += fp8_ ? part * static_cast<double>(sa[b]) * static_cast<double>(sb[b]) : part;
        }
        const double got =
            bf16_to_float(download<bf16>(set.out.view().data(), row * n + col, 1)[0]);
        diff += (got - ref) * (got - ref);
        norm += ref * ref;
        ++sampled;
      }
    }
  }
  r.sampled = sampled;
  r.sampled_error = std::sqrt(diff / std::max(norm, 1e-30));
  r.check_ok = std::isfinite(r.sampled_error) && r.sampled_error <= kGemmBenchTolerance;
}

}  // namespace moerun::tools
