// R virtual ranks in one process on the current GPU: rank r's window is slice r of one
// allocation, so a kernel of any rank reaches any window with a plain pointer. Kernels of all ranks
// go on the caller's streams in phase order (every rank's sends before any rank's receives), so a
// wait for another rank always finds its data already there.
#pragma once

#include "cuda/ep/transport.h"

namespace moerun::cuda::ep {

// Ranks one process simulates at most (the peer tables and flag arrays are sized per rank).
inline constexpr int kMaxVirtualRanks = 64;

class VirtualTransport final : public Transport {
 public:
  explicit VirtualTransport(int num_ranks);
  int num_ranks() const override { return static_cast<int>(ranks_.size()); }
  const std::vector<int>& local_ranks() const override { return ranks_; }
  std::string_view name() const override { return "virtual"; }
  std::unique_ptr<Windows> allocate_windows(std::size_t bytes) override;
  std::vector<int> all_gather(const std::vector<int>& values) override { return values; }

 private:
  std::vector<int> ranks_;
};

}  // namespace moerun::cuda::ep
