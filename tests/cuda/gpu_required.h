// Whether a GPU test that finds no usable device must fail rather than skip: MOERUN_REQUIRE_GPU=1,
// as the device scripts (scripts/device-*.sh) set it, so that a GPU machine where detection breaks
// cannot pass by skipping.
#pragma once

#include <cstdlib>
#include <string>

namespace moerun::test {

inline bool gpu_required() {
  const char* required = std::getenv("MOERUN_REQUIRE_GPU");
  return required != nullptr && std::string(required) == "1";
}

}  // namespace moerun::test
