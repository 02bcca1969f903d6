// `moerun bench-gemm`: moerun's grouped GEMMs on their own (masked or contiguous layout, FP8
// block-scaled or BF16), on random operands generated on the device, against the copy-bandwidth
// and matrix-rate ceilings measured in the same run. All shapes in one process, so one set of
// ceilings: bench/compare.py puts the results beside the peers' in one table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moerun/config.h"

namespace CLI {
class App;
}

namespace moerun::tools {

// One grouped GEMM problem: `groups` weight matrices [N, K], `m` rows per group.
struct GemmBenchShape {
  Layout layout = Layout::kMasked;
  std::int64_t groups = 0;
  std::int64_t m = 0;      // rows per group (masked: masked_m of every group)
  std::int64_t m_max = 0;  // masked: rows per group in A's buffer; contiguous: 0
  std::int64_t n = 0;
  std::int64_t k = 0;

  // A's rows: masked E_l x M_max; contiguous each group's m padded to 128 (m_indices -1 there).
  std::int64_t a_rows() const;
  // "LAYOUT:G:M:N:K[:M_MAX]", as --shape takes it (M_MAX only when not the default).
  std::string spec() const;
};

struct BenchGemmArgs {
  std::string dtype = "fp8";  // fp8 | bf16
  // One shape from separate options (0 / empty: not given) ...
  std::string layout;
  std::int64_t groups = 0, m = 0, m_max = 0, n = 0, k = 0;
  // ... or any number of "LAYOUT:G:M:N:K[:M_MAX]"; neither: the issue-4 shapes.
  std::vector<std::string> shapes;
  std::string variant = "heuristic";  // heuristic | all | a variant name
  // back-to-back: events around each launch, one after the other (operands rotated over 2x L2);
  // kernel: a memset of up to 8 GB (L2 flushed, and the GPU idle in between, as DeepGEMM's
  // bench_kineto does) before each launch, the events around the launch alone.
  std::string protocol = "back-to-back";
  int repeat = 30;
  std::uint64_t seed = 0;
  bool json = false;
  bool skip_ceilings = false;
};

void add_bench_gemm_command(CLI::App& app, BenchGemmArgs& args);

// The shapes to time, each checked against the GEMM launchers' size rules for the dtype (host
// only: no device needed). Throws moerun::Error naming the option or field that is wrong.
std::vector<GemmBenchShape> bench_gemm_shapes(const BenchGemmArgs& args);

// Returns the process exit code: 0 when every shape ran (or was skipped with a reason) and its
// sampled results matched the fp64 reference, 1 when one did not.
int bench_gemm_command(const BenchGemmArgs& args);

}  // namespace moerun::tools
