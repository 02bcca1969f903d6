// Bad values planted in a checkpoint written by the fixture: one element of one tensor
// overwritten in place, in whichever safetensors file of the directory holds it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/safetensors.h"

namespace moerun::test {

// Overwrites element `index` of tensor `name` with the `size` bytes at `value`; returns the file
// that holds it (empty, with a test failure, when no file does).
inline std::filesystem::path overwrite_element(const std::filesystem::path& dir,
                                               const std::string& name, std::int64_t index,
                                               const void* value, std::size_t size) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::uint64_t offset = 0;
    {
      const io::SafetensorsFile file(entry.path());
      const io::TensorInfo* t = file.find(name);
      if (t == nullptr) continue;
      EXPECT_EQ(io::st_dtype_size(t->dtype), size) << name;
      offset = file.header().data_start + t->begin + static_cast<std::uint64_t>(index) * size;
    }
    std::fstream out(entry.path(), std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(offset));
    out.write(static_cast<const char*>(value), static_cast<std::streamsize>(size));
    return entry.path();
  }
  ADD_FAILURE() << "no file in " << dir << " holds " << name;
  return {};
}

inline std::filesystem::path overwrite_f32(const std::filesystem::path& dir,
                                           const std::string& name, std::int64_t index,
                                           float value) {
  return overwrite_element(dir, name, index, &value, sizeof(value));
}

}  // namespace moerun::test
