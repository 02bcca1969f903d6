#include "progress.h"

#include <cstdio>

namespace moerun::tools {

void Progress::update(double fraction) {
  const int tenths = static_cast<int>(fraction * 10.0 + 1e-9);
  if (tenths <= printed_tenths_) return;
  printed_tenths_ = tenths;
  std::fprintf(stderr, "%s: %d%%\n", label_.c_str(), tenths * 10);
  std::fflush(stderr);
}

}  // namespace moerun::tools
