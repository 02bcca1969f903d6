// Cross-rank synchronization of the expert-parallel kernels: per-phase flags in every rank's
// window, an epoch per forward, bounded waits that report a named error instead of hanging.
//
// Flags: window int[kNumPhases][R]; flag[phase][s] on rank d is the epoch of the last forward in
// which rank s finished `phase` toward d. Each forward first increments the rank's epoch (device
// memory, so graph replays advance it too); a rank waits until every flag of a phase has reached
// its epoch. Flags only grow, so nothing is ever reset between forwards.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace moerun::cuda::ep {

enum class Phase : int {
  kCounts,    // all-to-all: my token counts per expert are in your window
  kDispatch,  // all-to-all: my tokens are in your layout
  kCombine,   // all-to-all: your results are back in your window
  kPartial,   // standard: my f32 partial is complete
  kReduced,   // standard: I have finished reading your partial
};
inline constexpr int kNumPhases = 5;
std::string phase_name(Phase phase);

enum class ErrorCode : int { kNone = 0, kTimeout = 1, kCapacity = 2 };

// The first device-side failure of a process's ranks (device memory, one per group of local
// ranks; later failures leave it alone). Read by the host after a synchronization.
struct DeviceError {
  int code;            // ErrorCode
  int phase;           // Phase
  int rank;            // the rank that failed
  int peer;            // timeout: the rank waited for; capacity: the receiving rank
  long long value;     // timeout: the flag's value; capacity: rows needed
  long long expected;  // timeout: the epoch waited for; capacity: rows available
};
std::string describe(const DeviceError& error);

// What a kernel needs to reach the other ranks (by value).
struct RankContext {
  int rank = 0;
  int num_ranks = 1;
  char* const* peers = nullptr;  // device [R]: every rank's window as this rank addresses it
  char* window = nullptr;        // this rank's window (peers[rank])
  int* epoch = nullptr;          // device: this rank's forward count
  DeviceError* error = nullptr;  // device: shared by the process's local ranks
  std::size_t flags_offset = 0;  // int[kNumPhases][R] in every window
  unsigned long long timeout_ns = 0;
};

// epoch += 1: the first launch of a rank's forward.
void begin_forward(const RankContext& ctx, cudaStream_t stream);
// Sets flag[phase][ctx.rank] = epoch in every rank's window (release, system scope), after
// everything earlier on `stream`.
void signal_peers(const RankContext& ctx, Phase phase, cudaStream_t stream);
// Waits until every rank's flag[phase] in this window is >= epoch + epoch_offset (acquire); on
// timeout records the error and returns, so that no stream hangs.
void wait_peers(const RankContext& ctx, Phase phase, int epoch_offset, cudaStream_t stream);

}  // namespace moerun::cuda::ep
