#include "bench_timing.h"

#include <algorithm>
#include <ctime>
#include <vector>

#include "cuda/cuda_check.h"

namespace moerun::tools {

double median_event_ms(const std::function<void(int)>& work, int warmup, int repeat,
                       cudaStream_t stream, const std::function<void(int)>& before) {
  for (int i = 0; i < warmup; ++i) {
    if (before) before(i);
    work(i);
  }
  cudaEvent_t begin = nullptr, end = nullptr;
  MOERUN_CUDA_CHECK(cudaEventCreate(&begin));
  struct Guard {
    cudaEvent_t& a;
    cudaEvent_t& b;
    ~Guard() {
      if (a != nullptr) cudaEventDestroy(a);
      if (b != nullptr) cudaEventDestroy(b);
    }
  } guard{begin, end};
  MOERUN_CUDA_CHECK(cudaEventCreate(&end));
  std::vector<float> ms;
  ms.reserve(static_cast<std::size_t>(repeat));
  for (int i = 0; i < repeat; ++i) {
    if (before) before(i);
    MOERUN_CUDA_CHECK(cudaEventRecord(begin, stream));
    work(i);
    MOERUN_CUDA_CHECK(cudaEventRecord(end, stream));
    MOERUN_CUDA_CHECK(cudaEventSynchronize(end));
    float t = 0;
    MOERUN_CUDA_CHECK(cudaEventElapsedTime(&t, begin, end));
    ms.push_back(t);
  }
  if (ms.empty()) return 0.0;
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M UTC", &tm);
  return buffer;
}

}  // namespace moerun::tools
