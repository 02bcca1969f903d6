// Pinned, overlapped uploads: every byte arrives where it belongs, through buffers much smaller
// than the data (so pieces are cut, merged and buffers reused), with a conversion on the way.
#include "cuda/staged_upload.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "moerun/errors.h"

namespace moerun::test {
namespace {

TEST(CudaStagedUpload, PiecesOfEverySizeLandInPlace) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  constexpr std::size_t kBytes = 3 << 20;
  std::vector<std::uint8_t> source(kBytes);
  for (auto& b : source) b = static_cast<std::uint8_t>(rng());
  DeviceTensor device(DType::kI32, {static_cast<std::int64_t>(kBytes / 4)});  // poisoned
  // Random piece sizes (multiples of 4), written out of order: each piece goes to its own place.
  std::vector<std::pair<std::size_t, std::size_t>> pieces;  // offset, bytes
  for (std::size_t at = 0; at < kBytes;) {
    const std::size_t n = std::min(kBytes - at, 4 * (1 + rng() % 40000));
    pieces.emplace_back(at, n);
    at += n;
  }
  std::shuffle(pieces.begin(), pieces.end(), rng);
  for (const int buffers : {2, 3}) {
    SCOPED_TRACE(std::to_string(buffers) + " buffers");
    device.poison();
    cuda::StagedUpload staged(64 << 10, buffers);
    auto* base = static_cast<std::byte*>(device.view().data());
    for (const auto& [at, n] : pieces) {
      staged.write(base + at, n, 4, [&](std::byte* staging, std::size_t offset, std::size_t count) {
        ASSERT_EQ(offset % 4, 0u);
        ASSERT_EQ(count % 4, 0u);
        std::memcpy(staging, source.data() + at + offset, count);
      });
    }
    staged.finish();
    EXPECT_EQ(staged.uploaded_bytes(), kBytes);
    const HostTensor got = device.to_host();
    EXPECT_EQ(std::memcmp(got.view().data(), source.data(), kBytes), 0);
  }
}

TEST(CudaStagedUpload, RejectsGranulesThatDoNotDivide) {
  MOERUN_REQUIRE_GPU();
  cuda::StagedUpload staged(1024, 2);
  DeviceTensor device(DType::kI32, {16});
  EXPECT_THROW(
      staged.write(device.view().data(), 10, 4, [](std::byte*, std::size_t, std::size_t) {}),
      InvalidArgument);
  EXPECT_THROW(cuda::StagedUpload(1024, 1), InvalidArgument);
}

}  // namespace
}  // namespace moerun::test
