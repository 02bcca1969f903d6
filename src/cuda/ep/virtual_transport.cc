#include "cuda/ep/virtual_transport.h"

#include <string>

#include "cuda/cuda_check.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {

constexpr std::size_t kWindowAlign = 4096;

class VirtualWindows final : public Windows {
 public:
  VirtualWindows(int ranks, std::size_t bytes) {
    const std::size_t stride = (bytes + kWindowAlign - 1) / kWindowAlign * kWindowAlign;
    MOERUN_CUDA_CHECK(
        cudaMalloc(reinterpret_cast<void**>(&base_), stride * static_cast<std::size_t>(ranks)));
    MOERUN_CUDA_CHECK(cudaMemset(base_, 0, stride * static_cast<std::size_t>(ranks)));
    std::vector<char*> table;
    for (int r = 0; r < ranks; ++r) table.push_back(base_ + stride * static_cast<std::size_t>(r));
    // Every rank sees the same table.
    MOERUN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&table_), sizeof(char*) * table.size()));
    MOERUN_CUDA_CHECK(
        cudaMemcpy(table_, table.data(), sizeof(char*) * table.size(), cudaMemcpyHostToDevice));
    local_ = std::move(table);
  }
  ~VirtualWindows() override {
    cudaFree(table_);  // no throw from a destructor
    cudaFree(base_);
  }
  char* local(int index) const override { return local_[static_cast<std::size_t>(index)]; }
  char* const* peers(int) const override { return table_; }

 private:
  char* base_ = nullptr;
  char** table_ = nullptr;
  std::vector<char*> local_;
};

}  // namespace

VirtualTransport::VirtualTransport(int num_ranks) {
  check_arg(num_ranks >= 1 && num_ranks <= kMaxVirtualRanks, "virtual ranks",
            "1.." + std::to_string(kMaxVirtualRanks), num_ranks);
  for (int r = 0; r < num_ranks; ++r) ranks_.push_back(r);
}

std::unique_ptr<Windows> VirtualTransport::allocate_windows(std::size_t bytes) {
  return std::make_unique<VirtualWindows>(num_ranks(), bytes);
}

}  // namespace moerun::cuda::ep
