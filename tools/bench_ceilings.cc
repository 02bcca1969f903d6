#include "bench_ceilings.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "bench_timing.h"
#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUBLASLT
#include <cublasLt.h>
#endif

namespace moerun::tools {

namespace {

double copy_gbs(int repeat, cudaStream_t stream) {
  constexpr std::int64_t kBytes = std::int64_t{1} << 30;
  cuda::DeviceBuffer src(DType::kBF16, {kBytes / 2}), dst(DType::kBF16, {kBytes / 2});
  cuda::fill_random(src.view(), 11, 1.0f, stream);
  const double ms = median_event_ms(
      [&](int) {
        MOERUN_CUDA_CHECK(cudaMemcpyAsync(dst.view().data(), src.view().data(), kBytes,
                                          cudaMemcpyDeviceToDevice, stream));
      },
      3, repeat, stream);
  return 2.0 * static_cast<double>(kBytes) / (ms * 1e-3) * 1e-9;
}

#ifdef MOERUN_HAS_CUBLASLT

void check_cublas(cublasStatus_t status, const char* expression) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("cuBLASLt error ") + cublasLtGetStatusString(status) + " in " +
                expression);
  }
}
#define MOERUN_CUBLAS_CHECK(expression) check_cublas((expression), #expression)

// D [n, n] bf16 = A^T B with A, B [n, n] of `dtype` (column-major, "TN": the layout cuBLASLt
// requires for FP8), fp32 accumulation. Returns TFLOP/s.
double matmul_tflops(cublasLtHandle_t handle, DType dtype, int repeat, cudaStream_t stream) {
  constexpr int kN = 8192;
  const cudaDataType ab = dtype == DType::kFP8E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  cuda::DeviceBuffer a(dtype, {kN, kN}), b(dtype, {kN, kN}), d(DType::kBF16, {kN, kN});
  cuda::fill_random(a.view(), 21, 1.0f, stream);
  cuda::fill_random(b.view(), 22, 1.0f, stream);
  constexpr std::size_t kWorkspaceBytes = std::size_t{64} << 20;
  cuda::DeviceBuffer workspace(DType::kI32, {static_cast<std::int64_t>(kWorkspaceBytes / 4)});

  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a_layout = nullptr, b_layout = nullptr, d_layout = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  auto release = [&] {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d_layout) cublasLtMatrixLayoutDestroy(d_layout);
    if (b_layout) cublasLtMatrixLayoutDestroy(b_layout);
    if (a_layout) cublasLtMatrixLayoutDestroy(a_layout);
    if (op) cublasLtMatmulDescDestroy(op);
  };
  try {
    MOERUN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    MOERUN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                                       sizeof(transpose)));
    MOERUN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)));
    MOERUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_layout, ab, kN, kN, kN));
    MOERUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_layout, ab, kN, kN, kN));
    MOERUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d_layout, CUDA_R_16BF, kN, kN, kN));
    MOERUN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    MOERUN_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    MOERUN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(
        handle, op, a_layout, b_layout, d_layout, d_layout, preference, 1, &heuristic, &found));
    if (found == 0) throw Error("cuBLASLt found no algorithm for the 8192^3 product");
    const float alpha = 1.0f, beta = 0.0f;
    const double ms = median_event_ms(
        [&](int) {
          MOERUN_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, a.view().data(), a_layout,
                                             b.view().data(), b_layout, &beta, d.view().data(),
                                             d_layout, d.view().data(), d_layout, &heuristic.algo,
                                             workspace.view().data(), kWorkspaceBytes, stream));
        },
        3, repeat, stream);
    release();
    return 2.0 * kN * static_cast<double>(kN) * kN / (ms * 1e-3) * 1e-12;
  } catch (...) {
    release();
    throw;
  }
}

#endif  // MOERUN_HAS_CUBLASLT

}  // namespace

Ceilings measure_ceilings(int repeat, cudaStream_t stream) {
  Ceilings c;
  c.copy_method = "1 GiB cudaMemcpyAsync device to device, read + write";
  c.copy_gbs = copy_gbs(repeat, stream);
#ifdef MOERUN_HAS_CUBLASLT
  c.matrix_method = "cuBLASLt 8192^3 TN, random data, fp32 accumulation, bf16 out";
  cublasLtHandle_t handle = nullptr;
  try {
    MOERUN_CUBLAS_CHECK(cublasLtCreate(&handle));
    c.bf16_tflops = matmul_tflops(handle, DType::kBF16, repeat, stream);
    c.fp8_tflops = matmul_tflops(handle, DType::kFP8E4M3, repeat, stream);
  } catch (const Error& e) {
    c.matrix_error = e.what();
  }
  if (handle != nullptr) cublasLtDestroy(handle);
#else
  c.matrix_error = "this build has no cuBLASLt (CUDA::cublasLt not found at configure time)";
#endif
  return c;
}

nlohmann::json ceilings_json(const std::optional<Ceilings>& c) {
  if (!c) return nullptr;
  nlohmann::json j = {{"copy_gbs", c->copy_gbs},
                      {"bf16_tflops", c->bf16_tflops},
                      {"fp8_tflops", c->fp8_tflops},
                      {"copy_method", c->copy_method},
                      {"matrix_method", c->matrix_method}};
  if (!c->matrix_error.empty()) j["matrix_error"] = c->matrix_error;
  return j;
}

void print_ceilings(const Ceilings& c) {
  std::printf(
      "ceilings (this run): copy %.0f GB/s (%s); BF16 %.0f TFLOP/s, FP8 %.0f TFLOP/s (%s)\n",
      c.copy_gbs, c.copy_method.c_str(), c.bf16_tflops, c.fp8_tflops, c.matrix_method.c_str());
  if (!c.matrix_error.empty())
    std::printf("matrix ceilings not measured: %s\n", c.matrix_error.c_str());
}

}  // namespace moerun::tools
