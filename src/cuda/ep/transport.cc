#include "cuda/ep/transport.h"

#include <string>

#include "moerun/errors.h"

namespace moerun::cuda::ep {

void Transport::all_reduce_sum(int, float*, std::size_t, cudaStream_t) {
  throw Error("the " + std::string(name()) + " transport has no all-reduce");
}

void Transport::reduce_scatter_sum(int, float*, std::size_t, cudaStream_t) {
  throw Error("the " + std::string(name()) + " transport has no reduce-scatter");
}

}  // namespace moerun::cuda::ep
