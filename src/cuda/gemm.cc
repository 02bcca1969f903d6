// Grouped GEMM host launchers: argument checks (InvalidArgument naming the field), the TMA tensor
// maps, the variant choice (cuda/gemm_heuristics.cc) and the launch. The kernels are in
// cuda/gemm/sm90_grouped_gemm.cuh.
//
// Tensor maps (sm90_params.h): A and B are 3-D, K-major, {K, rows, groups} with a {BLOCK_K, BLOCK_M
// or BLOCK_N, 1} box and 128-byte swizzling: masked A is {K, M_max, E_l}, contiguous A {K, M_sum,
// 1}, B {K, N, E_l}; FP8 A scales {M_max or M_sum, K / 128, groups} (MN-major) with a {BLOCK_M,
// 1, 1} box; out {N, M_max or M_sum, groups} with a 64 x 64 box for the TMA stores. Reads past K,
// past N or past M_max come back as zeros, never as a neighbour's data, and stores past N or M_max
// are dropped. cuTensorMapEncodeTiled comes from the driver through the runtime's entry-point
// query, so the library does not link libcuda.
#include "cuda/gemm.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/checks.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_variants.h"
#include "cuda/gemm_heuristics.h"
#include "cuda/per_device.h"
#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* entry = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    MOERUN_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &entry, 12000,
                                                       cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || entry == nullptr) {
      throw CudaError("the driver has no cuTensorMapEncodeTiled (CUDA >= 12.0 needed)");
    }
    return reinterpret_cast<EncodeTiledFn>(entry);
  }();
  return fn;
}

// A map of rank 1 to 3 {d0 innermost, d1, d2} over a dense tensor, `box` elements per load or
// store (entries past `rank` unused).
CUtensorMap make_map(const void* base, CUtensorMapDataType type, std::uint64_t elem_bytes, int rank,
                     const std::int64_t (&dims)[3], const int (&box)[3], CUtensorMapSwizzle swizzle,
                     const char* what) {
  const cuuint64_t sizes[3] = {static_cast<cuuint64_t>(dims[0]), static_cast<cuuint64_t>(dims[1]),
                               static_cast<cuuint64_t>(dims[2])};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(dims[0]) * elem_bytes,
                                 static_cast<cuuint64_t>(dims[0] * dims[1]) * elem_bytes};
  const cuuint32_t box_dims[3] = {static_cast<cuuint32_t>(box[0]), static_cast<cuuint32_t>(box[1]),
                                  static_cast<cuuint32_t>(box[2])};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  CUtensorMap map{};
  const CUresult status =
      encode_tiled()(&map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), sizes,
                     strides, box_dims, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                     CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (status != CUDA_SUCCESS) {
    std::string shape;
    for (int d = rank - 1; d >= 0; --d) shape += std::to_string(dims[d]) + (d > 0 ? ", " : "");
    throw CudaError("cuTensorMapEncodeTiled failed with CUresult " + std::to_string(status) +
                    " for the " + what + " [" + shape + "]");
  }
  return map;
}

CUtensorMap make_map_3d(const void* base, CUtensorMapDataType type, std::uint64_t elem_bytes,
                        const std::int64_t (&dims)[3], const int (&box)[3],
                        CUtensorMapSwizzle swizzle, const char* what) {
  return make_map(base, type, elem_bytes, 3, dims, box, swizzle, what);
}

// K-major operand {K, rows, groups} of e4m3 or bf16: 128 bytes of K x `box_rows` per load.
CUtensorMap make_operand_map(const void* base, bool fp8, std::int64_t k, std::int64_t rows,
                             std::int64_t groups, int box_k, int box_rows, const char* what) {
  return make_map_3d(base, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                     fp8 ? 1 : 2, {k, rows, groups}, {box_k, box_rows, 1},
                     CU_TENSOR_MAP_SWIZZLE_128B, what);
}

// SMs of the current device (cached per device: launchers ask on every call).
int sm_count() {
  static PerDevice<int> cache;
  return cache.get([](int device) {
    int count = 0;
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  });
}

bool aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

struct Operands {
  sm90::GroupedGemmParams params;
  const void* a = nullptr;
  const void* a_scale = nullptr;  // FP8: MN-major (core/scale_layout.h)
  const void* b = nullptr;
  bool fp8 = false;
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t experts = 0;
};

// Checks the operands of either layout (can_implement) and fills all but the layout fields. A's
// (FP8) scales come in groups of `a_scale_group_rows` rows (masked: M_max; contiguous: M_sum).
Operands check_operands(const GemmOperand& a, const GemmOperand& b, const TensorView& out,
                        std::int64_t rows, std::int64_t a_scale_group_rows) {
  check_arg(b.data.ndim() == 3, "B (weights) rank", "3 ([E_l, N, K])", b.data.ndim());
  const std::int64_t experts = b.data.size(0), n = b.data.size(1), k = b.data.size(2);
  const bool fp8 = b.data.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || b.data.dtype() == DType::kBF16, "B (weights) dtype", "bf16 or fp8_e4m3",
            dtype_name(b.data.dtype()));
  check_tensor(b.data, "B (weights)", b.data.dtype(), {experts, n, k}, DeviceType::kCuda);
  // N, K and the sizes (cuda/gemm_shape.h, shared with tools that check before any device).
  check_gemm_sizes(fp8, experts, rows, n, k);
  check_arg(a.data.dtype() == b.data.dtype(), "A (activations) dtype",
            std::string(dtype_name(b.data.dtype())) + " (the weights' dtype)",
            dtype_name(a.data.dtype()));
  check_arg(
      a.data.size(a.data.ndim() - 1) == k && a.data.numel() == rows * k && a.data.is_contiguous() &&
          a.data.device().type == DeviceType::kCuda,
      "A (activations)",
      "contiguous [rows = " + std::to_string(rows) + ", K = " + std::to_string(k) + "] on cuda",
      a.data.shape_string());
  check_arg(
      out.dtype() == DType::kBF16 && out.numel() == rows * n && out.size(out.ndim() - 1) == n &&
          out.is_contiguous() && out.device().type == DeviceType::kCuda,
      "out", "contiguous bf16 [rows, N = " + std::to_string(n) + "] on cuda", out.shape_string());
  check_arg(aligned16(a.data.data()) && aligned16(b.data.data()) && aligned16(out.data()),
            "A/B/out data", "16-byte aligned device pointers", "a misaligned pointer");
  Operands o;
  sm90::GroupedGemmParams& p = o.params;
  if (fp8) {
    check_tensor(b.scale, "B scale", DType::kF32, {experts, n / kQuantGroup, k / kQuantGroup},
                 DeviceType::kCuda);
    detail::check_act_scale(a.scale, "A scale", rows, k / kQuantGroup, a_scale_group_rows,
                            DeviceType::kCuda);
    check_arg(aligned16(a.scale.data()), "A scale data", "a 16-byte aligned device pointer",
              "a misaligned pointer");
    o.a_scale = a.scale.data();
    p.b_scale = b.scale.data_as<const float>();
  } else {
    check_arg(!a.scale.defined() && !b.scale.defined(), "BF16 operand scales", "none",
              "a scale tensor");
  }
  p.out = static_cast<std::uint16_t*>(out.data());
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.experts = static_cast<int>(experts);
  o.a = a.data.data();
  o.b = b.data.data();
  o.fp8 = fp8;
  o.n = n;
  o.k = k;
  o.experts = experts;
  return o;
}

// What the heuristic sees. Masked: E_l groups of expected_m rows (M_max when unknown).
// Contiguous: one group of M_sum rows (segments are 128-aligned, so no variant computes padding
// beyond its own rows).
GemmProblem masked_problem(bool fp8, std::int64_t experts, std::int64_t m_max, std::int64_t n,
                           std::int64_t k, std::int64_t expected_m) {
  return {fp8,
          static_cast<int>(experts),
          expected_m > 0 ? std::min(expected_m, m_max) : m_max,
          n,
          k,
          sm_count()};
}

GemmProblem contiguous_problem(bool fp8, std::int64_t m_sum, std::int64_t n, std::int64_t k) {
  return {fp8, 1, m_sum, n, k, sm_count()};
}

// Picks the variant for `problem`, builds the maps and launches. `a_rows`/`a_groups`: A's (and
// out's and the FP8 A scales') rows per group and groups.
void run(Operands& o, std::int64_t a_rows, std::int64_t a_groups, const GemmChoice& choice,
         int num_sms, cudaStream_t stream) {
  const sm90::VariantShape shape = sm90::variant_shape(choice.variant);
  sm90::GroupedGemmParams& p = o.params;
  p.n_blocks = static_cast<int>(ceil_div<std::int64_t>(o.n, shape.block_n));
  p.k_blocks = static_cast<int>(ceil_div<std::int64_t>(o.k, shape.block_k));
  if (p.masked_m == nullptr) p.m_row_blocks = static_cast<int>(a_rows / shape.block_m);
  p.raster_rows = choice.raster_rows;
  sm90::GroupedGemmMaps maps{};
  maps.a = make_operand_map(o.a, o.fp8, o.k, a_rows, a_groups, shape.block_k, shape.block_m,
                            "A (activations)");
  // With clusters, B comes in halves (each CTA multicasts one).
  maps.b = make_operand_map(o.b, o.fp8, o.k, o.n, o.experts, shape.block_k,
                            shape.block_n / shape.cluster_m, "B (weights)");
  if (o.fp8) {
    maps.a_scale = make_map_3d(o.a_scale, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                               {a_rows, o.k / kQuantGroup, a_groups}, {shape.block_m, 1, 1},
                               CU_TENSOR_MAP_SWIZZLE_NONE, "A scale");
  }
  maps.out = make_map_3d(p.out, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, {o.n, a_rows, a_groups},
                         {64, 64, 1}, CU_TENSOR_MAP_SWIZZLE_128B, "out");
  sm90::launch_variant(choice.variant, maps, p, num_sms, stream);
}

}  // namespace

std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal, cudaStream_t stream,
                                                 std::int64_t expected_m) {
  check_arg(a.data.ndim() == 3 && b.data.ndim() == 3 && a.data.size(0) == b.data.size(0),
            "A (activations) shape", "[E_l (as B), M_max, K]", a.data.shape_string());
  const std::int64_t experts = a.data.size(0), m_max = a.data.size(1);
  check_gemm_masked_m_max(m_max);
  check_arg(expected_m >= 0, "expected_m", ">= 0 (0 = unknown)", expected_m);
  Operands o = check_operands(a, b, out, experts * m_max, m_max);
  check_tensor(masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCuda);
  sm90::GroupedGemmParams& p = o.params;
  p.masked_m = masked_m.data_as<const int>();
  p.m_max = static_cast<int>(m_max);
  p.counter_blocks = static_cast<int>(m_max / kGemmBlockM);
  std::optional<OverlapReport> report;
  if (signal != nullptr) {
    check_arg(signal->block_m == kGemmBlockM, "overlap block_m", std::to_string(kGemmBlockM),
              signal->block_m);
    check_tensor(signal->counters, "overlap counters", DType::kI32,
                 {experts * (m_max / kGemmBlockM)}, DeviceType::kCuda);
    p.counters = signal->counters.data_as<int>();
  }
  const GemmProblem problem = masked_problem(o.fp8, experts, m_max, o.n, o.k, expected_m);
  // The variant is chosen for the whole machine whatever is reserved, so that a forward with the
  // overlap gives the same bits as one without it; only the persistent grid shrinks.
  int grid_sms = problem.num_sms;
  if (signal != nullptr) {
    check_arg(signal->reserved_sms >= 0 && signal->reserved_sms < problem.num_sms,
              "overlap reserved_sms", "0 .. " + std::to_string(problem.num_sms - 1),
              signal->reserved_sms);
    grid_sms -= signal->reserved_sms;
  }
  const GemmChoice choice = choose_gemm_variant(problem);
  if (signal != nullptr) {
    // Each tile adds 1 to its row blocks' counters: complete at the tile's N block count.
    report = OverlapReport{kGemmBlockM, static_cast<int>(ceil_div<std::int64_t>(
                                            o.n, sm90::variant_shape(choice.variant).block_n))};
  }
  if (experts * m_max > 0) run(o, m_max, experts, choice, grid_sms, stream);
  return report;
}

void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out,
                             cudaStream_t stream) {
  check_arg(a.data.ndim() == 2, "A (activations) rank", "2 ([M_sum, K])", a.data.ndim());
  const std::int64_t rows = a.data.size(0);
  check_gemm_contiguous_m_sum(rows);
  Operands o = check_operands(a, b, out, rows, rows);
  check_tensor(m_indices, "m_indices", DType::kI32, {rows}, DeviceType::kCuda);
  o.params.m_indices = m_indices.data_as<const int>();
  if (rows > 0) {
    const GemmProblem problem = contiguous_problem(o.fp8, rows, o.n, o.k);
    run(o, rows, 1, choose_gemm_variant(problem), problem.num_sms, stream);
  }
}

GemmChoice grouped_gemm_masked_variant(bool fp8, std::int64_t experts, std::int64_t m_max,
                                       std::int64_t n, std::int64_t k, std::int64_t expected_m) {
  return choose_gemm_variant(masked_problem(fp8, experts, m_max, n, k, expected_m));
}

GemmChoice grouped_gemm_contiguous_variant(bool fp8, std::int64_t m_sum, std::int64_t n,
                                           std::int64_t k) {
  return choose_gemm_variant(contiguous_problem(fp8, m_sum, n, k));
}

}  // namespace moerun::cuda
