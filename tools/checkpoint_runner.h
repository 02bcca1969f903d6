// `moerun run --model DIR`'s layer on one backend: the routed experts of one rank (or of every
// rank, simulated), the DeepSeek-V3 shared experts, the router GEMM and the routing.
//   CPU   weights from the host loader (views of the mapping or copies); router GEMM and routing
//         on the CPU oracle.
//   CUDA  weights uploaded once from the mapping through pinned staging buffers
//         (io/hf_device_loader.h); router GEMM, routing, every rank and the shared experts on the
//         device.
// run() is the layer forward and nothing else: on CUDA it enqueues the work and waits for the
// device, with no copy back. output() then brings the result back and sums the partial outputs
// in fp32, rounding once: rank 0's routed experts, the shared experts, then the other ranks (the
// simulated all-reduce; rank 0's partial is the one that holds the shared experts).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/progress.h"
#include "cpu/routing.h"
#include "io/hf_loader.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/layer.h"

namespace moerun::tools {

struct CheckpointRunOptions {
  Backend backend = Backend::kCpu;  // resolved: kCpu or kCuda
  LayoutChoice layout = LayoutChoice::kAuto;
  int ep_size = 1;
  int ep_rank = -1;  // -1: every rank, simulated; else only this rank (its f32 partial)
  bool quantize_fp8 = false;
  std::int64_t tokens = 0;  // the batch: the CUDA workspaces are sized for it
  // NaN/Inf weights and FP8 scales that are not finite and > 0 are rejected. CPU: by the host
  // loader, naming the file, tensor and element; CUDA: the router weight and bias so too, the
  // experts by the layers at construction, naming moerun's packed tensor and element
  // (w13_scale[e, r, c]), and each forward's inputs on the device.
  bool check_finite = true;
  // The hidden states' origin, for the message when the router logits overflow (CPU).
  std::string hidden_source = "the hidden states";
};

// What the load did, for the report.
struct LoadReport {
  io::LoadStats stats;
  std::vector<std::string> notes;
  std::optional<io::QuantizationCheck> quantization;
};

class CheckpointRunner {
 public:
  // Loads the layer onto the backend; `load_progress` gets the fraction uploaded (CUDA).
  CheckpointRunner(const io::HfCheckpoint& checkpoint, int layer,
                   const CheckpointRunOptions& options, const ProgressFn& load_progress = {});
  ~CheckpointRunner();
  CheckpointRunner(const CheckpointRunner&) = delete;
  CheckpointRunner& operator=(const CheckpointRunner&) = delete;

  // The routed layer as run: ep_size as asked, ep_rank 0 (or the one rank); weights as loaded.
  const MoeConfig& config() const;
  // The shared experts' one-expert layer; num_experts 0 when none run here (another rank has
  // them, or the family has none).
  const MoeConfig& shared_config() const;
  Backend backend() const;
  Layout layout_for(std::int64_t tokens) const;
  const LoadReport& load() const;
  const io::MoeLayerInfo& info() const;

  // hidden [T, H] bf16 (host), T = options.tokens; uploaded once on CUDA.
  void set_input(const HostTensor& hidden);
  // One forward: router GEMM, routing, every rank, the shared experts; returns when done (on CUDA,
  // reporting what the layers' finiteness checks found).
  void run();
  // After run(): [T, H] bf16, or the one rank's f32 partial sum (shared experts on rank 0).
  HostTensor output() const;
  // After run(): topk_ids / topk_weights [T, k] as the routing chose them.
  cpu::TopK routing() const;

  // Host weights for the reference: every routed expert (EP 1; those not flagged in `experts` may
  // be zeros) and the shared experts. CPU: the loaded layer itself; CUDA: loaded again on the
  // host, the flagged experts only, from the same files.
  const io::LoadedMoeLayer& host_weights(const std::vector<bool>& experts);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moerun::tools
