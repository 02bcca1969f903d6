// Helpers shared by the tests: fresh random tensors, poisoning, and small builders.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moerun/errors.h"
#include "moerun/host_tensor.h"

namespace moerun::test {

// A fresh seed per call (printed by the caller through SCOPED_TRACE so failures reproduce).
inline std::uint64_t fresh_seed() {
  static std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

// Fills with 0xFF bytes: NaN for bf16/f32/fp8 e4m3, -1 for i32. An element a stage forgets to
// write is then visible as a NaN (or a -1 row).
inline void poison(const HostTensor& t) {
  if (t.nbytes() > 0) std::memset(t.view().data(), 0xff, t.nbytes());
}

inline HostTensor make_i32(std::int64_t rows, std::int64_t cols, const std::vector<int>& values) {
  HostTensor t(DType::kI32, {rows, cols});
  EXPECT_EQ(static_cast<std::int64_t>(values.size()), rows * cols);
  std::memcpy(t.data<int>(), values.data(), values.size() * sizeof(int));
  return t;
}

inline HostTensor make_f32(std::int64_t rows, std::int64_t cols, const std::vector<float>& values) {
  HostTensor t(DType::kF32, {rows, cols});
  EXPECT_EQ(static_cast<std::int64_t>(values.size()), rows * cols);
  std::memcpy(t.data<float>(), values.data(), values.size() * sizeof(float));
  return t;
}

inline HostTensor make_bf16(std::int64_t rows, std::int64_t cols,
                            const std::vector<float>& values) {
  HostTensor t(DType::kBF16, {rows, cols});
  EXPECT_EQ(static_cast<std::int64_t>(values.size()), rows * cols);
  for (std::size_t i = 0; i < values.size(); ++i) t.data<bf16>()[i] = float_to_bf16(values[i]);
  return t;
}

// Random routing: each token picks k distinct experts of [0, E), some slots replaced by -1 with
// probability `skip`.
inline HostTensor random_topk_ids(std::int64_t tokens, int k, int experts, std::uint64_t seed,
                                  double skip = 0.0) {
  std::mt19937_64 rng(seed);
  HostTensor ids(DType::kI32, {tokens, k});
  std::vector<int> perm(static_cast<std::size_t>(experts));
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int e = 0; e < experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int j = 0; j < k; ++j) {
      const bool skipped = std::uniform_real_distribution<double>(0, 1)(rng) < skip;
      ids.data<int>()[t * k + j] = skipped ? -1 : perm[j];
    }
  }
  return ids;
}

inline HostTensor random_f32(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float lo,
                             float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  HostTensor t(DType::kF32, {rows, cols});
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// Runs `body`, expects a moerun::Error, and returns its message.
template <class Body>
std::string error_of(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no moerun::Error thrown";
  return "";
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "expected '" << (part) << "' in: " << (text)

inline bool bitwise_equal(const HostTensor& a, const HostTensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.view().data(), b.view().data(), a.nbytes()) == 0;
}

}  // namespace moerun::test
