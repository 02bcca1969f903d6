#include "bench_layer.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/layer_floor.h"
#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "cuda/routing.h"
#include "moerun/errors.h"

namespace moerun::tools {

namespace {

using cuda::DeviceBuffer;

// NOTE: H200's L2 is 60 MiB (cudaDevAttrL2CacheSize); inputs rotate over at least twice that, so a
// timed forward never finds its hidden states and logits in L2 from an earlier one.
constexpr int kMaxInputSets = 8;

DType out_dtype(const MoeConfig& c) { return c.ep_size > 1 ? DType::kF32 : DType::kBF16; }

std::size_t set_bytes(const BenchCase& b) {
  const MoeConfig& c = b.config;
  const auto t = static_cast<std::size_t>(b.tokens);
  return t * static_cast<std::size_t>(c.hidden_size) * (2 + dtype_size(out_dtype(c))) +
         t * static_cast<std::size_t>(c.num_experts) * 4;
}

int l2_bytes() {
  int device = 0, bytes = 0;
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device));
  return bytes;
}

int input_sets(const BenchCase& b) {
  const std::size_t per_set = std::max<std::size_t>(1, set_bytes(b));
  const std::size_t wanted = (2 * static_cast<std::size_t>(l2_bytes()) + per_set - 1) / per_set;
  return static_cast<int>(std::clamp<std::size_t>(wanted, 1, kMaxInputSets));
}

double weight_bytes(const MoeConfig& c, double experts) { return experts * expert_weight_bytes(c); }

struct InputSet {
  DeviceBuffer hidden, logits, out;
};

// Rank 0's share of one routing: [T, k] global ids on the host.
struct RoutingStats {
  double routed = 0, used = 0, touched = 0, m_sum = 0;
};

RoutingStats routing_stats(const HostTensor& ids, int local_experts) {
  const std::int64_t tokens = ids.size(0), k = ids.size(1);
  std::vector<std::int64_t> count(static_cast<std::size_t>(local_experts), 0);
  RoutingStats s;
  for (std::int64_t t = 0; t < tokens; ++t) {
    bool any = false;
    for (std::int64_t j = 0; j < k; ++j) {
      const int id = ids.data<int>()[t * k + j];
      if (id >= 0 && id < local_experts) {
        ++count[static_cast<std::size_t>(id)];
        any = true;
      }
    }
    s.touched += any ? 1 : 0;
  }
  for (const std::int64_t n : count) {
    s.routed += static_cast<double>(n);
    s.used += n > 0 ? 1 : 0;
    s.m_sum += static_cast<double>((n + 127) / 128 * 128);
  }
  return s;
}

// Bytes and FLOPs each stage must move and do (DESIGN.md's stages), for `s` (rank 0's share).
void account(CaseResult& r, const BenchCase& b, const RoutingStats& s) {
  const MoeConfig& c = b.config;
  const double t = static_cast<double>(b.tokens), h = static_cast<double>(c.hidden_size),
               inter = static_cast<double>(c.intermediate_size), e = c.num_experts,
               e_local = c.num_local_experts(), k = c.top_k();
  const double act = static_cast<double>(dtype_size(c.weight_dtype));
  const double out = static_cast<double>(dtype_size(out_dtype(c)));
  const double rows = s.routed, used = s.used;
  const bool fp8 = c.is_fp8();
  const double bias = c.routing.mode == RoutingMode::kGroupedTopK ? e * 4 : 0;
  // FP8 activations carry one f32 scale per 128 columns.
  auto act_bytes = [&](double cols) { return rows * cols * act + (fp8 ? rows * cols / 32.0 : 0); };
  auto& st = r.stages;
  auto at = [&](cuda::Stage stage) -> Measure& { return st[static_cast<std::size_t>(stage)]; };
  at(cuda::Stage::kRouting).bytes = t * e * 4 + bias + t * k * 8;
  at(cuda::Stage::kDispatchPermute).bytes = t * k * 4 + s.touched * h * 2 + act_bytes(h) +
                                            t * k * 4 + e_local * 4 +
                                            (r.layout == Layout::kContiguous ? s.m_sum * 4 : 0);
  at(cuda::Stage::kGateUp).bytes =
      act_bytes(h) + weight_bytes(c, used) * 2.0 / 3.0 + rows * 2 * inter * 2;
  at(cuda::Stage::kGateUp).flops = 2.0 * rows * 2 * inter * h;
  at(cuda::Stage::kActivation).bytes = rows * 2 * inter * 2 + act_bytes(inter);
  at(cuda::Stage::kDown).bytes = act_bytes(inter) + weight_bytes(c, used) / 3.0 + rows * h * 2;
  at(cuda::Stage::kDown).flops = 2.0 * rows * h * inter;
  at(cuda::Stage::kCombine).bytes = rows * h * 2 + t * k * 8 + t * h * out;
  r.layer.bytes = t * h * 2 + t * e * 4 + bias + weight_bytes(c, used) + t * h * out;
  r.layer.flops = 6.0 * rows * h * inter;
}

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// One instantiated graph of `work` captured on `stream`.
class Graph {
 public:
  Graph(const std::function<void()>& work, cudaStream_t stream) {
    MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      work();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);  // leave capture mode before reporting
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    const cudaError_t status = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    MOERUN_CUDA_CHECK(status);
  }
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  Graph(Graph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph& operator=(Graph&&) = delete;
  void launch(cudaStream_t stream) const { MOERUN_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

// Per input set, a way to run one forward: a graph replay or plain launches.
std::vector<std::function<void()>> runners(bool use_graphs, cuda::LayerBackend& layer,
                                           const std::vector<InputSet>& sets,
                                           std::vector<Graph>& graphs, cudaStream_t stream) {
  std::vector<std::function<void()>> run;
  graphs.clear();
  graphs.reserve(sets.size());
  for (const InputSet& s : sets) {
    auto forward = [&layer, &s, stream] {
      layer.forward(s.hidden.view(), s.logits.view(), s.out.view(), stream);
    };
    if (use_graphs) {
      graphs.emplace_back(forward, stream);
      const Graph* g = &graphs.back();
      run.emplace_back([g, stream] { g->launch(stream); });
    } else {
      run.emplace_back(forward);
    }
  }
  for (const auto& r : run) r();  // first replay of each graph: untimed
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return run;
}

class Events {
 public:
  explicit Events(std::size_t n) : events_(n) {
    for (auto& e : events_) MOERUN_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Events() {
    for (auto e : events_) cudaEventDestroy(e);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  cudaEvent_t operator[](std::size_t i) const { return events_[i]; }

 private:
  std::vector<cudaEvent_t> events_;
};

float elapsed_ms(cudaEvent_t begin, cudaEvent_t end) {
  float ms = 0;
  MOERUN_CUDA_CHECK(cudaEventElapsedTime(&ms, begin, end));
  return ms;
}

}  // namespace

std::size_t bench_case_device_bytes(const BenchCase& b) {
  const MoeConfig& c = b.config;
  LayerOptions options;
  options.layout = b.layout;
  options.max_tokens = std::max<std::int64_t>(1, b.tokens);
  const std::size_t workspace = cuda::plan_workspace(c, options).bytes;
  const std::size_t routing = static_cast<std::size_t>(b.tokens) * c.top_k() * 8;
  return static_cast<std::size_t>(weight_bytes(c, c.num_local_experts())) + workspace +
         static_cast<std::size_t>(input_sets(b)) * set_bytes(b) + routing;
}

CaseResult run_bench_case(const BenchCase& b, cudaStream_t stream) {
  const MoeConfig& c = b.config;
  check_arg(b.tokens > 0, "tokens", "> 0", b.tokens);
  const std::int64_t t = b.tokens, h = c.hidden_size, e = c.num_experts, k = c.top_k();
  CaseResult r;
  const cuda::DeviceMoeWeights weights =
      cuda::random_device_weights(c, c.num_local_experts(), b.seed, stream);
  r.input_sets = input_sets(b);
  std::vector<InputSet> sets;
  for (int i = 0; i < r.input_sets; ++i) {
    InputSet s{DeviceBuffer(DType::kBF16, {t, h}), DeviceBuffer(DType::kF32, {t, e}),
               DeviceBuffer(out_dtype(c), {t, h})};
    const std::uint64_t seed = b.seed * 1000 + 100 + 2 * static_cast<std::uint64_t>(i);
    cuda::fill_random(s.hidden.view(), seed, 2.0f, stream);
    // Uniform in [-3.5, 3.5]: standard deviation 2, as the host generator's logits.
    cuda::fill_random(s.logits.view(), seed + 1, 3.5f, stream);
    sets.push_back(std::move(s));
  }

  LayerOptions options;
  options.backend = Backend::kCuda;
  options.layout = b.layout;
  options.max_tokens = t;
  options.check_finite = b.check_finite;
  cuda::LayerBackend layer(c, weights.view(), options);
  r.layout = layer.layout_for(t);
  r.workspace_bytes = layer.owned_workspace().bytes;

  // The routing each set draws, for the byte accounting (the layer routes the same way).
  RoutingStats mean;
  {
    DeviceBuffer ids(DType::kI32, {t, k}), topk_weights(DType::kF32, {t, k});
    for (const InputSet& s : sets) {
      cuda::route(c.routing, static_cast<int>(e), s.logits.view(), weights.correction_bias.view(),
                  ids.view(), topk_weights.view(), stream);
      const RoutingStats one = routing_stats(ids.download(), c.num_local_experts());
      mean.routed += one.routed / r.input_sets;
      mean.used += one.used / r.input_sets;
      mean.touched += one.touched / r.input_sets;
      mean.m_sum += one.m_sum / r.input_sets;
    }
  }
  r.routed_rows = mean.routed;
  r.experts_used = mean.used;
  r.tokens_touched = mean.touched;
  account(r, b, mean);

  for (const InputSet& s : sets) {  // warm-up: module loads, first touches
    layer.forward(s.hidden.view(), s.logits.view(), s.out.view(), stream);
  }
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));

  std::vector<Graph> graphs;
  if (b.stages) {
    Events events(cuda::kNumStages + 1);
    cuda::StageEvents marks{};
    for (std::size_t i = 0; i < marks.size(); ++i) marks[i] = events[i];
    layer.set_stage_events(&marks);
    try {
      std::vector<std::function<void()>> run;
      try {
        run = runners(b.graphs, layer, sets, graphs, stream);
      } catch (const cuda::CudaError& error) {
        if (!b.graphs) throw;
        // Event nodes inside a graph need cudaEventRecordExternal (CUDA 11.1+); where capturing
        // them fails, the stages are timed on plain launches and the result says so.
        r.note = std::string("stages timed on plain launches: capturing stage events failed: ") +
                 error.what();
        graphs.clear();
        run = runners(false, layer, sets, graphs, stream);
      }
      std::vector<std::vector<float>> ms(cuda::kNumStages);
      for (int i = 0; i < b.repeat; ++i) {
        run[static_cast<std::size_t>(i) % run.size()]();
        MOERUN_CUDA_CHECK(cudaEventSynchronize(events[cuda::kNumStages]));
        for (int s = 0; s < cuda::kNumStages; ++s) {
          ms[static_cast<std::size_t>(s)].push_back(elapsed_ms(
              events[static_cast<std::size_t>(s)], events[static_cast<std::size_t>(s) + 1]));
        }
      }
      for (int s = 0; s < cuda::kNumStages; ++s) {
        r.stages[static_cast<std::size_t>(s)].us = median(ms[static_cast<std::size_t>(s)]) * 1e3;
      }
    } catch (...) {
      layer.set_stage_events(nullptr);
      throw;
    }
    layer.set_stage_events(nullptr);
    graphs.clear();
  }
  if (b.layer) {
    Events events(2);
    const auto run = runners(b.graphs, layer, sets, graphs, stream);
    std::vector<float> ms;
    for (int i = 0; i < b.repeat; ++i) {
      MOERUN_CUDA_CHECK(cudaEventRecord(events[0], stream));
      run[static_cast<std::size_t>(i) % run.size()]();
      MOERUN_CUDA_CHECK(cudaEventRecord(events[1], stream));
      MOERUN_CUDA_CHECK(cudaEventSynchronize(events[1]));
      ms.push_back(elapsed_ms(events[0], events[1]));
    }
    r.layer.us = median(ms) * 1e3;
    graphs.clear();
  }
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return r;
}

}  // namespace moerun::tools
