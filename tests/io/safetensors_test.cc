// The safetensors reader and writer: round trips, zero-copy views, and every bad-file case
// rejected with a message that names the file, the tensor and the problem.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>

#include "fixture.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::io {
namespace {

using test::TempDir;

using test::error_of;

std::vector<std::byte> iota_bytes(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 3);
  return v;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  TempDir dir;
  const auto path = dir / "t.safetensors";
  const auto a = iota_bytes(2 * 3 * 2), b = iota_bytes(5), c = iota_bytes(4 * 4), d = iota_bytes(8);
  write_safetensors(path,
                    {{"a.bf16", StDType::kBF16, {2, 3}, a},
                     {"b.fp8", StDType::kF8E4M3, {5}, b},
                     {"c.f32", StDType::kF32, {2, 1, 2}, c},
                     {"d.f16", StDType::kF16, {2, 2}, d},
                     {"empty", StDType::kF32, {0, 4}, {}}},
                    {{"format", "pt"}});
  const SafetensorsFile file(path);
  EXPECT_EQ(file.header().data_start % 8, 0u) << "the writer pads the header to 8 bytes";
  EXPECT_EQ(file.header().metadata.at("format"), "pt");
  ASSERT_EQ(file.header().tensors.size(), 5u);
  const TensorInfo& ta = file.at("a.bf16");
  EXPECT_EQ(ta.dtype, StDType::kBF16);
  EXPECT_EQ(ta.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(ta.begin, 0u);
  EXPECT_EQ(std::memcmp(file.bytes(ta).data(), a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(file.bytes(file.at("b.fp8")).data(), b.data(), b.size()), 0);
  EXPECT_EQ(std::memcmp(file.bytes(file.at("c.f32")).data(), c.data(), c.size()), 0);
  EXPECT_EQ(std::memcmp(file.bytes(file.at("d.f16")).data(), d.data(), d.size()), 0);
  EXPECT_EQ(file.at("empty").nbytes(), 0u);
}

TEST(Safetensors, ViewIsZeroCopyIntoTheMapping) {
  TempDir dir;
  const auto path = dir / "t.safetensors";
  const auto w = iota_bytes(4 * 8 * 2);
  write_safetensors(path, {{"w", StDType::kBF16, {4, 8}, w}});
  const SafetensorsFile file(path);
  const auto view = file.view(file.at("w"));
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->dtype(), DType::kBF16);
  EXPECT_EQ(view->shape(), (Shape{4, 8}));
  EXPECT_EQ(static_cast<const void*>(view->data()), file.bytes(file.at("w")).data());
}

TEST(Safetensors, MisalignedOrUnmappedDtypesGetNoView) {
  TempDir dir;
  const auto path = dir / "t.safetensors";
  const auto one = iota_bytes(1), f32 = iota_bytes(8), f16 = iota_bytes(4);
  // The u8 byte pushes the f32 tensor to an odd offset.
  write_safetensors(path, {{"byte", StDType::kU8, {1}, one},
                           {"f32", StDType::kF32, {2}, f32},
                           {"f16", StDType::kF16, {2}, f16}});
  const SafetensorsFile file(path);
  EXPECT_FALSE(file.view(file.at("f32")).has_value()) << "misaligned: must be copied";
  EXPECT_FALSE(file.view(file.at("f16")).has_value()) << "F16 is converted, never viewed";
  EXPECT_FALSE(file.view(file.at("byte")).has_value());
}

TEST(Safetensors, MissingTensorNamesFileAndTensor) {
  TempDir dir;
  const auto path = dir / "t.safetensors";
  write_safetensors(path, {});
  const SafetensorsFile file(path);
  const std::string message = error_of([&] { file.at("model.layers.0.mlp.gate.weight"); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("missing tensor 'model.layers.0.mlp.gate.weight'"), std::string::npos)
      << message;
}

// Opens `path` expecting a rejection; the message must name the file and contain `problem`.
void expect_rejected(const std::filesystem::path& path, const std::string& problem) {
  const std::string message = error_of([&] { SafetensorsFile file(path); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find(problem), std::string::npos)
      << "expected '" << problem << "' in: " << message;
}

TEST(SafetensorsBadFile, EmptyFileIsTruncated) {
  TempDir dir;
  test::write_bytes(dir / "f.safetensors", {});
  expect_rejected(dir / "f.safetensors", "truncated: 0 bytes");
}

TEST(SafetensorsBadFile, ShortFileIsTruncated) {
  TempDir dir;
  test::write_bytes(dir / "f.safetensors", {std::byte{4}, std::byte{0}, std::byte{0}});
  expect_rejected(dir / "f.safetensors", "truncated: 3 bytes");
}

TEST(SafetensorsBadFile, HeaderLengthBeyondTheFile) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path, "{}", 0);
  auto bytes = test::read_bytes(path);
  bytes[0] = std::byte{200};  // claims a 200-byte header in a 10-byte file
  test::write_bytes(path, bytes);
  expect_rejected(path, "header length 200 is beyond the file (2 bytes after the length)");
}

TEST(SafetensorsBadFile, HugeHeaderLength) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_bytes(path, std::vector<std::byte>(8, std::byte{0xff}));
  expect_rejected(path, "header length 18446744073709551615 is beyond the file");
}

TEST(SafetensorsBadFile, TruncatedDataBuffer) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  write_safetensors(path, {{"w", StDType::kF32, {4}, iota_bytes(16)}});
  auto bytes = test::read_bytes(path);
  bytes.resize(bytes.size() - 4);
  test::write_bytes(path, bytes);
  expect_rejected(path,
                  "tensor 'w': data_offsets [0, 16] out of range: the data buffer has 12 "
                  "bytes (truncated file?)");
}

TEST(SafetensorsBadFile, MalformedJson) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1], )", 4);
  expect_rejected(path, "malformed JSON header");
}

TEST(SafetensorsBadFile, HeaderNotAnObject) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path, "[1, 2]", 0);
  expect_rejected(path, "malformed JSON header: it does not start with '{'");
}

TEST(SafetensorsBadFile, EntryWithoutOffsets) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1]}})", 4);
  expect_rejected(path, "tensor 'w': missing \"data_offsets\"");
}

TEST(SafetensorsBadFile, OverlappingOffsets) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path,
                              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                              R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                              12);
  expect_rejected(path, "tensor 'b': data_offsets [4, 12] overlap those of 'a' [0, 8]");
}

TEST(SafetensorsBadFile, OffsetsOutOfRange) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(
      path, R"({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [100, 108]}})", 8);
  expect_rejected(path, "tensor 'w': data_offsets [100, 108] out of range");
}

TEST(SafetensorsBadFile, OffsetsEndBeforeBegin) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path,
                              R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}})", 8);
  expect_rejected(path, "tensor 'w': data_offsets [4, 2] end before begin");
}

TEST(SafetensorsBadFile, SizeDisagreesWithShape) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(
      path, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  expect_rejected(path, "tensor 'w': data_offsets [0, 8] hold 8 bytes, but [3] F32 needs 12");
}

TEST(SafetensorsBadFile, ShapeOverflow) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(
      path, R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
      0);
  expect_rejected(path, "tensor 'w': shape [4294967296,4294967296] overflows 64 bits");
}

TEST(SafetensorsBadFile, NegativeExtent) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(
      path, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0);
  expect_rejected(path, "tensor 'w': shape [-1] has an entry that is not a size");
}

TEST(SafetensorsBadFile, DeeplyNestedShapeDoesNotRecurse) {
  // 4 MB of brackets: parsing, the message and the cleanup must not recurse per level.
  TempDir dir;
  const auto path = dir / "f.safetensors";
  const std::size_t depth = 2'000'000;
  test::write_raw_safetensors(path,
                              R"({"w": {"dtype": "F32", "shape": )" + std::string(depth, '[') +
                                  std::string(depth, ']') + R"(, "data_offsets": [0, 0]}})",
                              0);
  expect_rejected(path, "tensor 'w': shape [<array>] has an entry that is not a size");
}

TEST(SafetensorsBadFile, UnsupportedDtype) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path,
                              R"({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})", 1);
  expect_rejected(path, "tensor 'w': unsupported dtype 'F4'");
}

TEST(SafetensorsBadFile, MetadataMustHoldStrings) {
  TempDir dir;
  const auto path = dir / "f.safetensors";
  test::write_raw_safetensors(path, R"({"__metadata__": {"format": 1}})", 0);
  expect_rejected(path, "\"__metadata__\" value of 'format' is not a string");
}

TEST(SafetensorsBadFile, NotAFile) {
  TempDir dir;
  const std::string message = error_of([&] { SafetensorsFile file(dir.path()); });
  EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
  const std::string missing = error_of([&] { SafetensorsFile file(dir / "nope.safetensors"); });
  EXPECT_NE(missing.find("nope.safetensors: cannot open"), std::string::npos) << missing;
}

TEST(SafetensorsWriter, RejectsBytesThatDisagreeWithShape) {
  TempDir dir;
  const auto bytes = iota_bytes(6);
  const std::string message = error_of([&] {
    write_safetensors(dir / "w.safetensors", {{"w", StDType::kF32, {2}, bytes}});
  });
  EXPECT_NE(message.find("bytes of tensor 'w'"), std::string::npos) << message;
}

TEST(SafetensorsWriter, TensorToWriteKeepsDtypeAndShape) {
  HostTensor t(DType::kI32, {2, 3});
  for (int i = 0; i < 6; ++i) t.data<int>()[i] = i - 1;
  TempDir dir;
  write_safetensors(dir / "t.safetensors", {tensor_to_write("ids", t.view())});
  const SafetensorsFile file(dir / "t.safetensors");
  const auto view = file.view(file.at("ids"));
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->dtype(), DType::kI32);
  EXPECT_EQ(view->data_as<const int>()[0], -1);
  EXPECT_EQ(view->data_as<const int>()[5], 4);
}

}  // namespace
}  // namespace moerun::io
