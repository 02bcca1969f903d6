// libFuzzer target: the safetensors header parser on arbitrary bytes (scripts/fuzz.sh).
//
// The parser must either reject the input with a moerun::Error or accept a header whose every
// tensor lies inside the input; any other exception, a crash, a leak or a sanitizer report is a
// bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/safetensors.h"
#include "moerun/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  try {
    const moerun::io::SafetensorsHeader header = moerun::io::parse_safetensors_header(file, "fuzz");
    // Read the first and last byte of each accepted tensor: ASan flags any range the parser let
    // through outside the input.
    unsigned sum = 0;
    for (const auto& [name, tensor] : header.tensors) {
      if (tensor.nbytes() == 0) continue;
      const std::uint8_t* begin = data + header.data_start + tensor.begin;
      sum += begin[0] + begin[tensor.nbytes() - 1];
      if (tensor.numel() < 0) __builtin_trap();  // a checked shape never wraps around
    }
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const moerun::Error&) {
    // A rejected input: the expected outcome for most of them.
  }
  return 0;
}
