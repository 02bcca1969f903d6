#include "ep_launch.h"

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "exit_codes.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>
#endif

namespace moerun::tools {

namespace {

bool write_all(int fd, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t bytes) {
  auto* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = read(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

// The child's whole life: its device, the id, the rank's work; never returns.
[[noreturn]] void child(int rank, int id_in, int id_out,
                        const std::function<int(int, const EpUniqueId&)>& rank_main) {
  int code = 1;
  try {
    // NOTE: NVLink multicast stays off on these machines (it can take shared GPUs down).
    setenv("NCCL_NVLS_ENABLE", "0", 1);
#ifdef MOERUN_HAS_CUDA
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices <= rank) {
      throw ResourceError("EP rank " + std::to_string(rank) + " needs GPU " + std::to_string(rank) +
                          "; " + std::to_string(devices) + " visible");
    }
    if (cudaSetDevice(rank) != cudaSuccess) {
      throw ResourceError("EP rank " + std::to_string(rank) + ": cudaSetDevice failed");
    }
#endif
    EpUniqueId id;
    if (rank == 0) {
      id = EpGroup::new_unique_id();
      if (!write_all(id_out, id.bytes.data(), id.bytes.size())) {
        throw ResourceError("EP rank 0: could not hand the NCCL unique id to the launcher");
      }
    } else if (!read_all(id_in, id.bytes.data(), id.bytes.size())) {
      throw ResourceError("EP rank " + std::to_string(rank) +
                          ": no NCCL unique id (rank 0 failed?)");
    }
    code = rank_main(rank, id);
  } catch (const ResourceError& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    code = kExitResource;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "rank %d: out of host memory (std::bad_alloc)\n", rank);
    code = kExitResource;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    code = kExitBadInput;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(code);
}

}  // namespace

int run_ranks(int ranks, const std::function<int(int, const EpUniqueId&)>& rank_main) {
  check_arg(ranks >= 1, "ep_size", ">= 1", ranks);
  std::fflush(stdout);
  std::fflush(stderr);
  int up[2];  // rank 0 -> launcher: the id
  if (pipe(up) != 0) throw ResourceError(std::string("pipe: ") + std::strerror(errno));
  std::vector<int> down(static_cast<std::size_t>(ranks), -1);  // launcher -> rank r
  std::vector<pid_t> pids;
  for (int r = 0; r < ranks; ++r) {
    int fds[2] = {-1, -1};
    if (r > 0 && pipe(fds) != 0) throw ResourceError(std::string("pipe: ") + std::strerror(errno));
    const pid_t pid = fork();
    if (pid < 0) throw ResourceError(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      close(up[0]);
      if (r > 0) close(fds[1]);
      child(r, fds[0], up[1], rank_main);
    }
    if (r > 0) {
      close(fds[0]);
      down[static_cast<std::size_t>(r)] = fds[1];
    }
    pids.push_back(pid);
  }
  close(up[1]);
  EpUniqueId id;
  const bool got = read_all(up[0], id.bytes.data(), id.bytes.size());
  close(up[0]);
  for (int r = 1; r < ranks; ++r) {
    if (got) write_all(down[static_cast<std::size_t>(r)], id.bytes.data(), id.bytes.size());
    close(down[static_cast<std::size_t>(r)]);  // without the id, the rank reads EOF and stops
  }
  int first_failure = 0;
  std::vector<bool> alive(pids.size(), true);
  for (std::size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    const pid_t done = waitpid(-1, &status, 0);
    if (done < 0) break;
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (pids[i] == done) alive[i] = false;
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : int{kExitResource};
    if (code != 0 && first_failure == 0) {
      first_failure = code;
      // The others would wait for this rank in their collectives: stop the ones still running.
      for (std::size_t i = 0; i < pids.size(); ++i) {
        if (alive[i]) kill(pids[i], SIGTERM);
      }
    }
  }
  return first_failure;
}

int visible_gpus() {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw ResourceError(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    int devices = 0;
#ifdef MOERUN_HAS_CUDA
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
#endif
    _exit(devices > 255 ? 255 : devices);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return 0;
  return WEXITSTATUS(status);
}

}  // namespace moerun::tools
