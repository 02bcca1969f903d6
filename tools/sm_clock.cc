#include "sm_clock.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>

namespace moerun::tools {

namespace {

// The three NVML entry points used, by their documented C signatures (nvmlReturn_t is an int,
// 0 = success; nvmlDevice_t an opaque pointer; NVML_CLOCK_SM = 1).
using InitFn = int (*)();
using HandleByPciFn = int (*)(const char*, void**);
using ClockInfoFn = unsigned (*)(void*, int, unsigned*);
constexpr int kNvmlClockSm = 1;

}  // namespace

SmClockSampler::SmClockSampler(int device) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    reason_ = "libnvidia-ml.so.1 not found";
    return;
  }
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  auto by_pci = reinterpret_cast<HandleByPciFn>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
  clock_info_ = reinterpret_cast<ClockInfoFn>(dlsym(lib, "nvmlDeviceGetClockInfo"));
  char bus_id[32] = {};
  if (init == nullptr || by_pci == nullptr || clock_info_ == nullptr) {
    reason_ = "NVML lacks nvmlInit_v2 / nvmlDeviceGetHandleByPciBusId_v2 / nvmlDeviceGetClockInfo";
  } else if (init() != 0) {
    reason_ = "nvmlInit_v2 failed";
  } else if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device) != cudaSuccess) {
    reason_ = "cudaDeviceGetPCIBusId failed";
  } else if (by_pci(bus_id, &handle_) != 0) {
    reason_ = std::string("NVML has no device at PCI bus id ") + bus_id;
  }
  if (!reason_.empty()) handle_ = nullptr;
}

SmClockSampler::~SmClockSampler() {
  if (running_) stop();
}

void SmClockSampler::start() {
  samples_.clear();
  if (handle_ == nullptr || running_) return;
  running_ = true;
  thread_ = std::thread([this] {
    while (running_.load()) {
      unsigned mhz = 0;
      if (clock_info_(handle_, kNvmlClockSm, &mhz) == 0 && mhz > 0) samples_.push_back(mhz);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
}

double SmClockSampler::stop() {
  if (running_) {
    running_ = false;
    thread_.join();
  }
  if (samples_.empty()) return 0.0;
  std::sort(samples_.begin(), samples_.end());
  return samples_[samples_.size() / 2];
}

}  // namespace moerun::tools
