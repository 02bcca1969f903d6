// The NCCL transport: one rank per process. Windows are ncclMemAlloc'd and registered as NCCL
// symmetric windows; peers are reached through NCCL's LSA (load/store accessible) pointers, so the
// all-to-all needs every rank in one LSA team (one NVLink domain), checked at allocation. The
// standard backend uses ncclAllReduce / ncclReduceScatter, which work across any network. NVLink
// multicast is never asked for (no multimem team, no NVLS).
#pragma once

#include <nccl.h>

#include "cuda/ep/transport.h"

namespace moerun::cuda::ep {

class NcclTransport final : public Transport {
 public:
  // `owned`: destroy the communicator with the transport (a group moerun made).
  NcclTransport(ncclComm_t comm, bool owned);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int num_ranks() const override { return size_; }
  const std::vector<int>& local_ranks() const override { return rank_; }
  std::string_view name() const override { return "nccl"; }
  std::unique_ptr<Windows> allocate_windows(std::size_t bytes) override;
  bool has_collectives() const override { return true; }
  void all_reduce_sum(int local_index, float* data, std::size_t count,
                      cudaStream_t stream) override;
  void reduce_scatter_sum(int local_index, float* data, std::size_t count,
                          cudaStream_t stream) override;
  std::vector<int> all_gather(const std::vector<int>& values) override;

 private:
  ncclComm_t comm_;
  bool owned_;
  int size_ = 0;
  std::vector<int> rank_;
};

// Throws moerun::Error naming the call and NCCL's reason unless `result` is ncclSuccess.
void check_nccl(ncclResult_t result, const char* expression, ncclComm_t comm);

}  // namespace moerun::cuda::ep

#define MOERUN_NCCL_CHECK(expression, comm) \
  ::moerun::cuda::ep::check_nccl((expression), #expression, (comm))
