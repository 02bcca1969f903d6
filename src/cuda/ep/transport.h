// The transport under expert-parallel dispatch and combine: symmetric windows (every rank has one
// of the same size and layout, and every rank's kernels can address every rank's window through
// a table of peer pointers) and, where the transport has them, collectives for the standard
// backend's reduction.
//
// Two implementations: VirtualTransport (R ranks of one process on one GPU, their windows slices
// of one allocation) and NcclTransport (one rank per process, windows registered with NCCL and
// addressed through its LSA peer pointers). The dispatch and combine kernels see only the peer
// tables, so they are the same kernels on both.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

namespace moerun::cuda::ep {

// One window per rank, allocated collectively; freed (collectively, for NCCL) on destruction.
class Windows {
 public:
  virtual ~Windows() = default;
  // Local rank i's own window, and its device table [R] of every rank's window as it addresses
  // them (peers[r] is rank r's window; peers[rank] is its own).
  virtual char* local(int local_index) const = 0;
  virtual char* const* peers(int local_index) const = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int num_ranks() const = 0;
  virtual const std::vector<int>& local_ranks() const = 0;
  virtual std::string_view name() const = 0;
  // `bytes` per rank (rounded up as the transport needs), zeroed. Collective.
  virtual std::unique_ptr<Windows> allocate_windows(std::size_t bytes) = 0;

  // Whether the standard backend's partials are summed with the collectives below (NCCL) rather
  // than by moerun's kernel over the peers' windows (rank order, bitwise as the oracle).
  virtual bool has_collectives() const { return false; }
  // In place: data [count] f32 summed over the ranks. Collective, enqueued on `stream`.
  virtual void all_reduce_sum(int local_index, float* data, std::size_t count, cudaStream_t stream);
  // data [R * count] f32 -> the sum of the ranks' block `rank` in data + rank * count.
  virtual void reduce_scatter_sum(int local_index, float* data, std::size_t count,
                                  cudaStream_t stream);
  // Host-side, collective, at construction only: every rank's `values` (the same count on every
  // rank) in rank order. Virtual ranks pass all of theirs at once.
  virtual std::vector<int> all_gather(const std::vector<int>& values) = 0;
};

}  // namespace moerun::cuda::ep
