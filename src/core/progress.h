// How long-running library work reports progress to a caller that wants to show it.
#pragma once

#include <functional>

namespace moerun {

// Called with a fraction in [0, 1] as long work progresses (possibly never, for short work).
using ProgressFn = std::function<void(double fraction)>;

}  // namespace moerun
