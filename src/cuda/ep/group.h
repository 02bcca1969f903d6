// What a moerun::EpGroup holds (internal: the tools reach the transport through it).
#pragma once

#include <memory>

#include "cuda/ep/transport.h"
#include "moerun/ep.h"

namespace moerun {

struct EpGroup::Impl {
  std::shared_ptr<cuda::ep::Transport> transport;
};

}  // namespace moerun
