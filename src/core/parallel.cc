#include "core/parallel.h"

#include <cstdlib>
#include <string>

namespace moerun::detail {

// MOERUN_CPU_THREADS overrides the core count (tests use it to check thread-count independence).
int cpu_threads() {
  static const int threads = [] {
    if (const char* env = std::getenv("MOERUN_CPU_THREADS")) {
      const int n = std::atoi(env);
      if (n > 0) return n;
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return threads;
}

}  // namespace moerun::detail
