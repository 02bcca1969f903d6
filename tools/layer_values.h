// What the layer computed from the user's hidden states must be finite: an overflow of finite
// inputs (hidden states around 1e30, say) is rejected naming the input row it came from.
#pragma once

#include <string>

#include "moerun/tensor.h"

namespace moerun::tools {

// Rejects (InvalidArgument) the first non-finite element of `result` [T, C] (host), computed from
// `hidden` [T, H] bf16 (host), naming `name` and the element, the input row, `hidden_source`
// ("'x.safetensors'") and the row's largest magnitude.
void check_layer_values(const TensorView& result, const char* name, const TensorView& hidden,
                        const std::string& hidden_source);

}  // namespace moerun::tools
