// One `moerun bench` case on the CUDA backend: a model shape, T tokens, one rank's share of the
// experts (EP view), random weights and inputs generated on the device. Times each stage and the
// whole layer, and counts the bytes and FLOPs each stage must move or do for the routing drawn.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/layer.h"
#include "moerun/config.h"
#include "moerun/layer.h"

namespace moerun::tools {

struct BenchCase {
  std::string model;
  MoeConfig config;  // ep_size set; the case is rank 0's share
  std::int64_t tokens = 0;
  LayoutChoice layout = LayoutChoice::kAuto;
  int repeat = 30;
  bool stages = true;  // time each stage (events between them)
  bool layer = true;   // time the whole layer (no events inside)
  bool graphs = true;  // time CUDA graph replays (else plain launches)
  // LayerOptions::check_finite: the forward's finiteness check kernel is timed with the routing
  // stage (forward() enqueues it first), as the layer runs by default.
  bool check_finite = true;
  std::uint64_t seed = 0;
};

// What one timed thing moved and did, and its median time.
struct Measure {
  double us = 0;
  double bytes = 0;  // each input read once, each output written once (routed experts only)
  double flops = 0;  // GEMMs: 2 x rows actually routed x N x K
};

struct CaseResult {
  Layout layout = Layout::kMasked;
  int input_sets = 1;
  std::size_t workspace_bytes = 0;
  // Routing of the inputs drawn, averaged over the input sets (rank 0's share).
  double routed_rows = 0;     // (token, slot) pairs this rank computes
  double experts_used = 0;    // local experts with at least one row
  double tokens_touched = 0;  // tokens with at least one local slot
  std::array<Measure, cuda::kNumStages> stages{};
  Measure layer;
  std::string note;  // how the timing departed from the case's settings, if it did
};

// Device bytes the case needs (weights, layer workspace, input sets); for skipping what cannot fit.
std::size_t bench_case_device_bytes(const BenchCase& c);

// Runs the case on `stream` (weights and inputs allocated and freed here).
CaseResult run_bench_case(const BenchCase& c, cudaStream_t stream);

}  // namespace moerun::tools
