// One `moerun bench-gemm` shape on the CUDA backend: random operands on the device (rotated over
// input sets to exceed 2x L2), the grouped GEMM timed with events, the result spot-checked against
// an fp64 reference on the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bench_gemm_command.h"
#include "cuda/device_memory.h"
#include "cuda/gemm.h"
#include "sm_clock.h"

namespace moerun::tools {

// Sampled outputs vs fp64 (the inputs exact, fp32 accumulation and one bf16 rounding on the GPU).
inline constexpr double kGemmBenchTolerance = 1e-2;

struct GemmBenchResult {
  std::string variant;            // the variant that ran
  bool heuristic = false;         // ... is the launcher's own choice
  std::string heuristic_variant;  // the launcher's choice and its rule
  std::string heuristic_reason;
  int input_sets = 1;
  double us = 0;      // median
  double sm_mhz = 0;  // median SM clock while the timed launches ran (0: unknown)
  double flops = 0;   // 2 G M N K
  double bytes = 0;   // G (M K + N K) x element bytes + 2 G M N (DeepGEMM's accounting)
  int sampled = 0;    // output elements checked
  double sampled_error = 0;
  bool check_ok = true;
};

class GemmBench {
 public:
  // Device bytes of one input set (A, B, their FP8 scales, out).
  static std::size_t set_bytes(const GemmBenchShape& s, bool fp8);
  // Input sets so that they exceed 2x L2 (at most 16), as many as 90% of `free_bytes` allows; 0
  // when not even one fits.
  static int input_sets(const GemmBenchShape& s, bool fp8, int l2_bytes, std::size_t free_bytes);

  GemmBench(const GemmBenchShape& s, bool fp8, int input_sets, std::uint64_t seed,
            cudaStream_t stream);
  // `forced`: a cuda::sm90::GemmVariant value, or -1 for the launcher's choice. `flush`: with the
  // kernel-only protocol, a device buffer memset before each launch (outside the timing);
  // undefined for back-to-back launches. `clock` samples the SM clock during the timed launches.
  GemmBenchResult time(int forced, int repeat, const TensorView& flush, SmClockSampler& clock);

 private:
  struct InputSet {
    cuda::DeviceBuffer a, a_scale, b, b_scale, out;
  };
  void launch(const InputSet& set) const;
  // Relative error of a few output elements of set 0 (first/last row of the first/last group,
  // three columns) against fp64 from the same inputs; sets `r.sampled`, `r.sampled_error`.
  void check(GemmBenchResult& r) const;

  GemmBenchShape s_;
  bool fp8_;
  cudaStream_t stream_;
  std::vector<InputSet> sets_;
  cuda::DeviceBuffer masked_m_, m_indices_;
};

}  // namespace moerun::tools
