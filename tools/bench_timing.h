// Event timing shared by the bench commands: warm-up, then the median of many runs, each between
// two CUDA events on the stream.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>

namespace moerun::tools {

// Median milliseconds of `repeat` calls work(i), i = 0 .. repeat-1, each between two events on
// `stream`, after `warmup` untimed calls work(0 .. warmup-1). Callers rotate inputs by i.
// `before(i)`, when given, runs on the stream before each call, outside the events (an L2 flush).
double median_event_ms(const std::function<void(int)>& work, int warmup, int repeat,
                       cudaStream_t stream, const std::function<void(int)>& before = {});

// "YYYY-MM-DD HH:MM UTC", for reports.
std::string utc_now();

}  // namespace moerun::tools
