#include "cuda/staged_upload.h"

#include <algorithm>
#include <string>

#include "cuda/cuda_check.h"
#include "moerun/errors.h"

namespace moerun::cuda {

StagedUpload::StagedUpload(std::size_t buffer_bytes, int buffers) : buffer_bytes_(buffer_bytes) {
  check_arg(buffers >= 2, "staging buffers", ">= 2 (one fills while another is sent)", buffers);
  check_arg(buffer_bytes >= 256, "staging buffer bytes", ">= 256", buffer_bytes);
  buffers_.resize(static_cast<std::size_t>(buffers));
  try {
    MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (Buffer& b : buffers_) {
      MOERUN_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&b.host), buffer_bytes_));
      MOERUN_CUDA_CHECK(cudaEventCreateWithFlags(&b.sent, cudaEventDisableTiming));
    }
  } catch (...) {
    release();
    throw;
  }
}

StagedUpload::~StagedUpload() { release(); }

void StagedUpload::release() noexcept {
  // No throw: a failed copy was (or will be) reported by finish().
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (Buffer& b : buffers_) {
    if (b.sent != nullptr) cudaEventDestroy(b.sent);
    if (b.host != nullptr) cudaFreeHost(b.host);
    b = {};
  }
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

void StagedUpload::send() {
  Buffer& b = buffers_[current_];
  for (const Run& r : runs_) {
    MOERUN_CUDA_CHECK(cudaMemcpyAsync(r.device_dst, b.host + r.staging_offset, r.bytes,
                                      cudaMemcpyHostToDevice, stream_));
  }
  runs_.clear();
  MOERUN_CUDA_CHECK(cudaEventRecord(b.sent, stream_));
  b.in_flight = true;
  current_ = (current_ + 1) % buffers_.size();
  used_ = 0;
  Buffer& next = buffers_[current_];
  // NOTE: the next buffer may still be read by the copy engine; overwriting it early would send
  // the new bytes in the old copy.
  if (next.in_flight) MOERUN_CUDA_CHECK(cudaEventSynchronize(next.sent));
  next.in_flight = false;
}

void StagedUpload::write(void* device_dst, std::size_t bytes, std::size_t granule,
                         const Fill& fill) {
  check_arg(granule >= 1 && granule <= buffer_bytes_ && bytes % granule == 0, "upload granule",
            "a divisor of the bytes, at most one staging buffer",
            std::to_string(granule) + " for " + std::to_string(bytes) + " bytes");
  auto* dst = static_cast<std::byte*>(device_dst);
  std::size_t offset = 0;
  while (offset < bytes) {
    std::size_t room = (buffer_bytes_ - used_) / granule * granule;
    if (room == 0) {
      send();
      room = buffer_bytes_ / granule * granule;
    }
    const std::size_t count = std::min(room, bytes - offset);
    std::byte* staging = buffers_[current_].host + used_;
    fill(staging, offset, count);
    if (!runs_.empty() && runs_.back().device_dst + runs_.back().bytes == dst + offset &&
        runs_.back().staging_offset + runs_.back().bytes == used_) {
      runs_.back().bytes += count;  // one copy for adjacent pieces (many small scale tensors)
    } else {
      runs_.push_back({used_, dst + offset, count});
    }
    used_ += count;
    offset += count;
    uploaded_ += count;
  }
}

void StagedUpload::finish() {
  if (!runs_.empty()) send();
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (Buffer& b : buffers_) b.in_flight = false;
}

}  // namespace moerun::cuda
