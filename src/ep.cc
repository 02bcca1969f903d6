#include "moerun/ep.h"

#include <cstring>
#include <string>

#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include "cuda/ep/ep_layer.h"
#include "cuda/ep/group.h"
#include "cuda/ep/virtual_transport.h"
#endif
#ifdef MOERUN_HAS_NCCL
#include <nccl.h>

#include "cuda/ep/nccl_transport.h"
#endif

namespace moerun {

std::string_view ep_backend_name(EpBackend backend) {
  return backend == EpBackend::kStandard ? "standard" : "all-to-all";
}

bool nccl_available() {
#ifdef MOERUN_HAS_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

#ifndef MOERUN_HAS_NCCL
[[noreturn]] void no_nccl() {
  throw Error(
      "expert parallelism over NCCL: this build has no NCCL (configure with NCCL >= 2.28 "
      "found and MOERUN_ENABLE_NCCL on)");
}
#endif

#ifndef MOERUN_HAS_CUDA
[[noreturn]] void no_cuda() {
  throw Error("expert parallelism: this build has no CUDA backend (configure with nvcc available)");
}
#endif

}  // namespace

#ifndef MOERUN_HAS_CUDA
struct EpGroup::Impl {};
#endif

EpGroup EpGroup::from_nccl(ncclComm* comm) {
#ifdef MOERUN_HAS_NCCL
  auto impl = std::make_shared<Impl>();
  impl->transport = std::make_shared<cuda::ep::NcclTransport>(comm, false);
  return EpGroup(std::move(impl));
#else
  (void)comm;
  no_nccl();
#endif
}

EpUniqueId EpGroup::new_unique_id() {
#ifdef MOERUN_HAS_NCCL
  static_assert(sizeof(ncclUniqueId) == sizeof(EpUniqueId::bytes), "NCCL's unique id is 128 bytes");
  ncclUniqueId id;
  MOERUN_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
  EpUniqueId out;
  std::memcpy(out.bytes.data(), &id, sizeof id);
  return out;
#else
  no_nccl();
#endif
}

EpGroup EpGroup::create_nccl(const EpUniqueId& id, int rank, int size) {
#ifdef MOERUN_HAS_NCCL
  check_arg(size >= 1, "EP group size", ">= 1", size);
  check_arg(rank >= 0 && rank < size, "EP rank", "0 <= rank < " + std::to_string(size), rank);
  ncclUniqueId nccl_id;
  std::memcpy(&nccl_id, id.bytes.data(), sizeof nccl_id);
  ncclComm_t comm = nullptr;
  MOERUN_NCCL_CHECK(ncclCommInitRank(&comm, size, nccl_id, rank), nullptr);
  auto impl = std::make_shared<Impl>();
  try {
    impl->transport = std::make_shared<cuda::ep::NcclTransport>(comm, true);
  } catch (...) {
    ncclCommDestroy(comm);
    throw;
  }
  return EpGroup(std::move(impl));
#else
  (void)id;
  (void)rank;
  (void)size;
  no_nccl();
#endif
}

EpGroup EpGroup::virtual_ranks(int size) {
#ifdef MOERUN_HAS_CUDA
  auto impl = std::make_shared<Impl>();
  impl->transport = std::make_shared<cuda::ep::VirtualTransport>(size);
  return EpGroup(std::move(impl));
#else
  (void)size;
  no_cuda();
#endif
}

int EpGroup::size() const {
#ifdef MOERUN_HAS_CUDA
  return impl_->transport->num_ranks();
#else
  no_cuda();
#endif
}

const std::vector<int>& EpGroup::local_ranks() const {
#ifdef MOERUN_HAS_CUDA
  return impl_->transport->local_ranks();
#else
  no_cuda();
#endif
}

std::string_view EpGroup::transport_name() const {
#ifdef MOERUN_HAS_CUDA
  return impl_->transport->name();
#else
  no_cuda();
#endif
}

struct EpLayer::Impl {
#ifdef MOERUN_HAS_CUDA
  std::unique_ptr<cuda::ep::EpLayerBackend> backend;
#endif
};

EpLayer::EpLayer(const EpGroup& group, const MoeConfig& config,
                 const std::vector<MoeWeights>& local_weights, const EpOptions& options)
    : impl_(std::make_unique<Impl>()) {
#ifdef MOERUN_HAS_CUDA
  impl_->backend = std::make_unique<cuda::ep::EpLayerBackend>(group.impl()->transport, config,
                                                              local_weights, options);
#else
  (void)group;
  (void)config;
  (void)local_weights;
  (void)options;
  no_cuda();
#endif
}

EpLayer::~EpLayer() = default;
EpLayer::EpLayer(EpLayer&&) noexcept = default;
EpLayer& EpLayer::operator=(EpLayer&&) noexcept = default;

Layout EpLayer::layout() const {
#ifdef MOERUN_HAS_CUDA
  return impl_->backend->layout();
#else
  no_cuda();
#endif
}

std::size_t EpLayer::workspace_bytes() const {
#ifdef MOERUN_HAS_CUDA
  return impl_->backend->workspace_bytes();
#else
  no_cuda();
#endif
}

void EpLayer::forward_routed(std::span<const EpRankIO> ranks, void* stream) {
#ifdef MOERUN_HAS_CUDA
  impl_->backend->forward_routed(ranks, static_cast<cudaStream_t>(stream));
#else
  (void)ranks;
  (void)stream;
  no_cuda();
#endif
}

void EpLayer::check() {
#ifdef MOERUN_HAS_CUDA
  impl_->backend->check();
#else
  no_cuda();
#endif
}

}  // namespace moerun
