#include "moerun/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "moerun/errors.h"
#include "moerun/host_tensor.h"
#include "test_util.h"

namespace moerun {
namespace {

using test::error_of;

TEST(TensorView, ContiguousStridesAndSizes) {
  HostTensor t(DType::kBF16, {3, 4, 5});
  EXPECT_EQ(t.view().stride(0), 20);
  EXPECT_EQ(t.view().stride(2), 1);
  EXPECT_EQ(t.numel(), 60);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_TRUE(t.view().is_contiguous());
  EXPECT_EQ(t.view().shape_string(), "[3, 4, 5]");
}

TEST(TensorView, EmptyShapeHasNoElements) {
  HostTensor t(DType::kF32, {0, 7});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.defined());
  EXPECT_FALSE(TensorView().defined());
}

TEST(TensorView, CloneCopiesBytes) {
  HostTensor t(DType::kI32, {4});
  for (int i = 0; i < 4; ++i) t.data<int>()[i] = i * 7;
  HostTensor c = t.clone();
  EXPECT_NE(c.view().data(), t.view().data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c.data<int>()[i], i * 7);
}

TEST(HostTensor, ZerosSmallAndMappedAreZeroAndWritable) {
  // Below 1 MiB an allocation and a memset; above, a fresh mapping (64 MiB here, untouched but
  // for the pages written).
  for (const std::int64_t n : {std::int64_t{100}, std::int64_t{16} << 20}) {
    HostTensor t = HostTensor::zeros(DType::kF32, {n});
    ASSERT_EQ(t.numel(), n);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.view().data()) % 64, 0u) << "aligned";
    for (const std::int64_t i : {std::int64_t{0}, n / 2, n - 1})
      EXPECT_EQ(t.data<float>()[i], 0.0f);
    t.data<float>()[n - 1] = 3.0f;
    HostTensor moved = std::move(t);  // the mapping moves with its owner and is unmapped once
    EXPECT_EQ(moved.data<float>()[n - 1], 3.0f);
    EXPECT_EQ(moved.clone().data<float>()[n - 1], 3.0f);
  }
}

TEST(CheckTensor, NamesTheFieldAndExpectedShape) {
  HostTensor t(DType::kBF16, {2, 8});
  EXPECT_EQ(error_of([&] {
              check_tensor(t.view(), "w13", DType::kBF16, {2, 16}, DeviceType::kCpu);
            }),
            "moerun: invalid w13 shape: expected [2, 16], got [2, 8]");
  EXPECT_EQ(error_of([&] {
              check_tensor(t.view(), "w2", DType::kFP8E4M3, {2, 8}, DeviceType::kCpu);
            }),
            "moerun: invalid w2 dtype: expected fp8_e4m3, got bf16");
  EXPECT_EQ(error_of([&] {
              check_tensor(t.view(), "x", DType::kBF16, {2, 8}, DeviceType::kCuda);
            }),
            "moerun: invalid x device: expected cuda, got cpu");
  EXPECT_EQ(
      error_of([&] { check_tensor(TensorView(), "bias", DType::kF32, {4}, DeviceType::kCpu); }),
      "moerun: invalid bias: expected a tensor, got none");
  EXPECT_NO_THROW(check_tensor(t.view(), "x", DType::kBF16, {2, 8}, DeviceType::kCpu));
}

TEST(Shape, RejectsNegativeExtentsAndTooManyDims) {
  EXPECT_THROW(Shape({2, -1}), InvalidArgument);
  EXPECT_THROW(Shape({1, 2, 3, 4, 5}), InvalidArgument);
}

}  // namespace
}  // namespace moerun
