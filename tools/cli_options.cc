#include "cli_options.h"

namespace moerun::tools {

LayoutChoice parse_layout(std::string_view value) {
  if (value == "masked") return LayoutChoice::kMasked;
  if (value == "contiguous") return LayoutChoice::kContiguous;
  return LayoutChoice::kAuto;
}

Backend parse_backend(std::string_view value) {
  if (value == "cpu") return Backend::kCpu;
  if (value == "cuda") return Backend::kCuda;
  return Backend::kAuto;
}

}  // namespace moerun::tools
