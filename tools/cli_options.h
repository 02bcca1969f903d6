// Option values shared by the CLI's commands, parsed once.
#pragma once

#include <string_view>

#include "moerun/layer.h"

namespace moerun::tools {

// "masked" | "contiguous" | "auto" (the option's own check has already rejected anything else).
LayoutChoice parse_layout(std::string_view value);
// "cpu" | "cuda" | "auto".
Backend parse_backend(std::string_view value);

}  // namespace moerun::tools
