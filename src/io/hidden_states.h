// The CLI's activation files: hidden states in, the layer's output (and routing) out.
#pragma once

#include <cstdint>
#include <filesystem>

#include "moerun/host_tensor.h"

namespace moerun::io {

// The one [T, hidden_size] tensor of a safetensors file, whatever its name, as bf16 (BF16 read as
// is, F16/F32 rounded to nearest even). Rejects a file with no tensor or several, another rank,
// a width other than hidden_size, or a dtype other than BF16/F16/F32, naming file and tensor;
// with `check_finite`, also a NaN or infinite value (after rounding to bf16), naming the element.
HostTensor read_hidden_states(const std::filesystem::path& path, std::int64_t hidden_size,
                              bool check_finite = true);

}  // namespace moerun::io
