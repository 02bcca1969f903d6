// NCCL symmetric windows and their LSA peer table (the table is read once, by a kernel, from the
// window handle NCCL gives the device).
#include <cuda_runtime.h>
#include <nccl.h>
#include <nccl_device.h>

#include <string>

#include "cuda/cuda_check.h"
#include "cuda/ep/nccl_transport.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {

constexpr std::size_t kWindowAlign = NCCL_WIN_REQUIRED_ALIGNMENT;

__global__ void peer_table_kernel(ncclWindow_t window, int ranks, char** table) {
  const int peer = static_cast<int>(threadIdx.x);
  if (peer < ranks) table[peer] = static_cast<char*>(ncclGetPeerPointer(window, 0, peer));
}

class NcclWindows final : public Windows {
 public:
  NcclWindows(ncclComm_t comm, int ranks, std::size_t bytes) : comm_(comm) {
    const std::size_t size = (bytes + kWindowAlign - 1) / kWindowAlign * kWindowAlign;
    MOERUN_NCCL_CHECK(ncclMemAlloc(reinterpret_cast<void**>(&base_), size), comm);
    // Zeroed and complete before registration, which no peer passes before this rank reaches it:
    // no peer's flag can land before the zeros.
    MOERUN_CUDA_CHECK(cudaMemset(base_, 0, size));
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    MOERUN_NCCL_CHECK(ncclCommWindowRegister(comm, base_, size, &window_, NCCL_WIN_COLL_SYMMETRIC),
                      comm);
    MOERUN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&table_),
                                 sizeof(char*) * static_cast<std::size_t>(ranks)));
    peer_table_kernel<<<1, ranks>>>(window_, ranks, table_);
    MOERUN_CUDA_CHECK_LAUNCH();
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~NcclWindows() override {
    // No throw from a destructor; deregistration is collective, as the layer's destruction is.
    cudaFree(table_);
    ncclCommWindowDeregister(comm_, window_);
    ncclMemFree(base_);
  }
  char* local(int) const override { return base_; }
  char* const* peers(int) const override { return table_; }

 private:
  ncclComm_t comm_;
  char* base_ = nullptr;
  ncclWindow_t window_ = nullptr;
  char** table_ = nullptr;
};

}  // namespace

void check_nccl(ncclResult_t result, const char* expression, ncclComm_t comm) {
  if (result == ncclSuccess || result == ncclInProgress) return;
  std::string why = ncclGetErrorString(result);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') why += " (" + std::string(last) + ")";
  }
  throw Error(std::string("NCCL: ") + expression + " failed: " + why);
}

NcclTransport::NcclTransport(ncclComm_t comm, bool owned) : comm_(comm), owned_(owned) {
  check_arg(comm != nullptr, "NCCL communicator", "a communicator", "null");
  int version = 0;
  MOERUN_NCCL_CHECK(ncclGetVersion(&version), nullptr);
  // Symmetric windows and the device-side LSA pointers arrived in NCCL 2.28.
  check_arg(version >= 22800, "NCCL version", ">= 2.28 (symmetric windows)", version);
  int rank = 0, device = 0, current = 0;
  MOERUN_NCCL_CHECK(ncclCommCount(comm, &size_), comm);
  MOERUN_NCCL_CHECK(ncclCommUserRank(comm, &rank), comm);
  MOERUN_NCCL_CHECK(ncclCommCuDevice(comm, &device), comm);
  MOERUN_CUDA_CHECK(cudaGetDevice(&current));
  check_arg(device == current, "NCCL communicator device",
            "the current CUDA device (" + std::to_string(current) + ")", device);
  check_arg(size_ <= 1024, "EP group size", "<= 1024 ranks", size_);
  rank_ = {rank};
}

NcclTransport::~NcclTransport() {
  if (owned_) ncclCommDestroy(comm_);  // no throw from a destructor
}

std::unique_ptr<Windows> NcclTransport::allocate_windows(std::size_t bytes) {
  const ncclTeam_t lsa = ncclTeamLsa(comm_);
  if (lsa.nRanks != size_) {
    throw Error(
        "expert parallelism over NCCL: all-to-all needs every rank in one NVLink (LSA) "
        "domain; this rank's LSA team has " +
        std::to_string(lsa.nRanks) + " of " + std::to_string(size_) +
        " ranks (use the standard backend across nodes)");
  }
  return std::make_unique<NcclWindows>(comm_, size_, bytes);
}

void NcclTransport::all_reduce_sum(int, float* data, std::size_t count, cudaStream_t stream) {
  MOERUN_NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream), comm_);
}

void NcclTransport::reduce_scatter_sum(int, float* data, std::size_t count, cudaStream_t stream) {
  // In place: rank r's block of the input is where its result goes.
  MOERUN_NCCL_CHECK(ncclReduceScatter(data, data + static_cast<std::size_t>(rank_[0]) * count,
                                      count, ncclFloat32, ncclSum, comm_, stream),
                    comm_);
}

std::vector<int> NcclTransport::all_gather(const std::vector<int>& values) {
  const std::size_t count = values.size();
  std::vector<int> all(count * static_cast<std::size_t>(size_));
  if (count == 0) return all;
  int* device = nullptr;
  MOERUN_CUDA_CHECK(cudaMalloc(&device, sizeof(int) * all.size()));
  MOERUN_CUDA_CHECK(cudaMemcpy(device + static_cast<std::size_t>(rank_[0]) * count, values.data(),
                               sizeof(int) * count, cudaMemcpyHostToDevice));
  const ncclResult_t result = ncclAllGather(device + static_cast<std::size_t>(rank_[0]) * count,
                                            device, count, ncclInt32, comm_, nullptr);
  const cudaError_t synced = cudaDeviceSynchronize();
  if (result == ncclSuccess && synced == cudaSuccess) {
    MOERUN_CUDA_CHECK(
        cudaMemcpy(all.data(), device, sizeof(int) * all.size(), cudaMemcpyDeviceToHost));
  }
  cudaFree(device);
  MOERUN_NCCL_CHECK(result, comm_);
  MOERUN_CUDA_CHECK(synced);
  return all;
}

}  // namespace moerun::cuda::ep
