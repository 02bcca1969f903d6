// Helpers shared by the tests: fresh random tensors, poisoning, and small builders.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "moerun/errors.h"
#include "moerun/host_tensor.h"

namespace moerun::test {

// A fresh seed, replayable. The first call in a test returns the test's root seed, MOERUN_TEST_SEED
// when set and else a random one, and prints it ("[   SEED   ] MOERUN_TEST_SEED=<root> for <test>",
// also recorded as the test's property "seed"), so the log of a failure shows how to replay it;
// every later call in the same test returns a value derived from the root and the call's rank.
// MOERUN_TEST_SEED=<root> --gtest_filter=<test> therefore replays every draw of the test. Not
// thread-safe: tests draw their seeds on the main thread.
inline std::uint64_t fresh_seed() {
  static std::string test;  // the test the root belongs to
  static std::uint64_t root = 0, calls = 0;
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name =
      info != nullptr ? std::string(info->test_suite_name()) + "." + info->name() : "";
  if (calls == 0 || name != test) {
    test = name;
    calls = 0;
    if (const char* fixed = std::getenv("MOERUN_TEST_SEED")) {
      char* end = nullptr;
      root = std::strtoull(fixed, &end, 10);
      if (end == fixed || *end != '\0') {
        ADD_FAILURE() << "MOERUN_TEST_SEED: expected an unsigned integer, got '" << fixed << "'";
      }
    } else {
      std::random_device device;
      root = (static_cast<std::uint64_t>(device()) << 32) ^ device();
    }
    std::cout << "[   SEED   ] MOERUN_TEST_SEED=" << root << " for " << name << "\n";
    ::testing::Test::RecordProperty("seed", std::to_string(root));
  }
  if (calls++ == 0) return root;
  // splitmix64 of root + rank: independent streams for the test's later draws.
  std::uint64_t z = root + calls * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
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
