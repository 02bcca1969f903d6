// `moerun bench --ep-size R --ep-backend standard|all-to-all`: the expert-parallel layer timed
// phase by phase (dispatch, expert compute, combine, total), with the bytes each phase moves and
// its bandwidth, with and without single-batch overlap. Virtual ranks run all R ranks on this GPU
// (their total is R ranks' work on one GPU); `--ep-transport nccl` runs one process per GPU.
#pragma once

#include "bench_command.h"

namespace moerun::tools {

// Returns the process exit code (0: every case ran or was skipped with its reason).
int ep_bench_command(const BenchArgs& args);

}  // namespace moerun::tools
