// One process per EP rank on this machine, connected by an NCCL unique id, without MPI: the parent
// forks the ranks before touching CUDA or NCCL (so every child starts clean); rank 0 makes the id
// and the parent hands it to the others through pipes (no file is written). Rank r runs on GPU r.
#pragma once

#include <functional>

#include "moerun/ep.h"

namespace moerun::tools {

// Runs rank_main(rank, id) in `ranks` child processes with NCCL_NVLS_ENABLE=0 (NVLink multicast
// off) and CUDA device `rank` current; waits for all of them. A rank that fails (exit code != 0,
// signal) gets the others stopped, since they would wait for it. A rank_main that throws exits
// with its exception's code (exit_codes.h: 3 for a ResourceError, 2 otherwise). Returns 0 when
// every rank returned 0, else the first failure's exit code (kExitResource for a rank killed by a
// signal).
int run_ranks(int ranks, const std::function<int(int rank, const EpUniqueId& id)>& rank_main);

// CUDA devices visible, asked in a child process so that the caller stays free to fork ranks.
int visible_gpus();

}  // namespace moerun::tools
