// parallel_for: splits [0, n) into contiguous chunks over the machine's cores.
//
// The CPU oracle's loops are embarrassingly parallel over rows or experts; contiguous chunks keep
// each thread on its own cache lines and make results independent of the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace moerun::detail {

int cpu_threads();

// Calls body(begin, end) on disjoint chunks covering [0, n); rethrows the first exception.
template <class Body>
void parallel_for(std::int64_t n, std::int64_t min_chunk, Body&& body) {
  if (n <= 0) return;
  const std::int64_t max_threads = std::max<std::int64_t>(1, cpu_threads());
  const std::int64_t threads =
      std::min(max_threads, std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, min_chunk)));
  if (threads == 1) {
    body(std::int64_t{0}, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(threads - 1));
  auto run_chunk = [&](std::int64_t t) {
    const std::int64_t begin = n * t / threads;
    const std::int64_t end = n * (t + 1) / threads;
    try {
      body(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  for (std::int64_t t = 1; t < threads; ++t) workers.emplace_back(run_chunk, t);
  run_chunk(0);
  for (auto& w : workers) w.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace moerun::detail
