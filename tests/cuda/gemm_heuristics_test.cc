// The grouped GEMM heuristic (plain C++, no device): each rule picks what it says it picks.
#include "cuda/gemm_heuristics.h"

#include <gtest/gtest.h>

#include <string>

namespace moerun::cuda {
namespace {

using sm90::GemmVariant;

GemmChoice choose(bool fp8, int groups, std::int64_t rows, std::int64_t n, std::int64_t k) {
  return choose_gemm_variant({fp8, groups, rows, n, k, 132});
}

TEST(GemmHeuristic, DecodeTakesSixtyFourRowTiles) {
  for (const std::int64_t rows : {1, 8, 64}) {
    EXPECT_EQ(choose(true, 32, rows, 4096, 7168).variant, GemmVariant::kFp8M64N128) << rows;
    EXPECT_EQ(choose(false, 32, rows, 4096, 7168).variant, GemmVariant::kBf16M64N256) << rows;
  }
  EXPECT_NE(choose(true, 32, 65, 4096, 7168).variant, GemmVariant::kFp8M64N128);
}

TEST(GemmHeuristic, Fp8PrefillTakesTheWidestTileWhenWavesAreFull) {
  // 256 row blocks x 22 N blocks: the last wave of 132 SMs is ~67% full, the tile 1.5x N 128's.
  EXPECT_EQ(choose(true, 1, 32768, 4096, 7168).variant, GemmVariant::kFp8M128N192);
}

TEST(GemmHeuristic, Fp8FewTilesFollowWaveFill) {
  // 8 row blocks x 32 N blocks of 128 = 256 tiles (2 waves, 97% full) against 176 tiles of 192
  // (1.33 waves): N 128.
  EXPECT_EQ(choose(true, 2, 512, 4096, 7168).variant, GemmVariant::kFp8M128N128);
  // N 7168: 448 tiles of 128 fill 4 waves to 85%; 112 (512 tiles, 97%) or 160 (360, 91%) win.
  const GemmVariant v = choose(true, 4, 256, 7168, 2048).variant;
  EXPECT_TRUE(v == GemmVariant::kFp8M128N112 || v == GemmVariant::kFp8M128N160)
      << gemm_variant_name(v);
}

TEST(GemmHeuristic, Bf16FewRowBlocksPerGroupShareB) {
  EXPECT_EQ(choose(false, 4, 256, 7168, 2048).variant, GemmVariant::kBf16M128N256C2);
  EXPECT_EQ(choose(false, 2, 512, 4096, 7168).variant, GemmVariant::kBf16M128N256C2);
  EXPECT_EQ(choose(false, 1, 32768, 4096, 7168).variant, GemmVariant::kBf16M128N256);
  EXPECT_EQ(choose(false, 16, 100, 4096, 7168).variant, GemmVariant::kBf16M128N256);
}

TEST(GemmHeuristic, EveryChoiceSaysWhy) {
  for (const bool fp8 : {false, true}) {
    for (const std::int64_t rows : {1, 100, 300, 5000, 40000}) {
      const GemmChoice c = choose(fp8, 3, rows, 1536, 2048);
      EXPECT_EQ(sm90::variant_shape(c.variant).fp8, fp8);
      EXPECT_FALSE(std::string(c.reason).empty());
    }
  }
}

TEST(GemmHeuristic, NamesSayTheTile) {
  EXPECT_EQ(gemm_variant_name(GemmVariant::kFp8M128N192), "fp8_M128N192");
  EXPECT_EQ(gemm_variant_name(GemmVariant::kBf16M128N256C2), "bf16_M128N256C2");
}

}  // namespace
}  // namespace moerun::cuda
