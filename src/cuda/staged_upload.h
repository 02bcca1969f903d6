// Host-to-device copies through pinned staging buffers, for loading weights: the caller fills one
// staging buffer (reading the mapped file, converting on the way) while the copy engine sends the
// previous one, so that reading and uploading overlap, and no pageable copy (which the driver
// stages again, synchronously) is ever made. All copies run on the uploader's own stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace moerun::cuda {

class StagedUpload {
 public:
  // `buffers` pinned host buffers of `buffer_bytes` each (at least 2, so that one fills while
  // another is sent).
  explicit StagedUpload(std::size_t buffer_bytes = std::size_t{32} << 20, int buffers = 3);
  // Waits for the copies still in flight and frees everything (no throw: errors are for finish()).
  ~StagedUpload();
  StagedUpload(const StagedUpload&) = delete;
  StagedUpload& operator=(const StagedUpload&) = delete;

  // fill(staging, offset, count) writes the destination bytes [offset, offset + count) to
  // `staging` (pinned memory); it may use every core.
  using Fill = std::function<void(std::byte* staging, std::size_t offset, std::size_t count)>;
  // Fills the `bytes` bytes of device memory at `device_dst` with what `fill` writes, in pieces
  // cut at multiples of `granule` bytes (the destination element size, so that a conversion never
  // splits an element). Returns before the copies complete; `fill` is done with when it returns.
  void write(void* device_dst, std::size_t bytes, std::size_t granule, const Fill& fill);
  // Sends what is staged and waits for every copy issued so far.
  void finish();
  std::uint64_t uploaded_bytes() const { return uploaded_; }

 private:
  struct Run {
    std::size_t staging_offset;
    std::byte* device_dst;
    std::size_t bytes;
  };
  struct Buffer {
    std::byte* host = nullptr;
    cudaEvent_t sent = nullptr;  // recorded after the buffer's copies
    bool in_flight = false;
  };
  // Waits for the stream and frees what was allocated (constructor failures and the destructor).
  void release() noexcept;
  // Issues the current buffer's copies and moves on to the next buffer, waiting until it is free.
  void send();

  std::size_t buffer_bytes_;
  std::vector<Buffer> buffers_;
  std::size_t current_ = 0;
  std::size_t used_ = 0;   // bytes of the current buffer filled
  std::vector<Run> runs_;  // the current buffer's copies, adjacent ones merged
  cudaStream_t stream_ = nullptr;
  std::uint64_t uploaded_ = 0;
};

}  // namespace moerun::cuda
