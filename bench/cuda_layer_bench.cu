// Times the CUDA layer at the benchmark models' full shapes (one GPU, EP 1): a forward captured in
// a CUDA graph (launch gaps removed), warm-up, then `repeat` timed replays with events; median.
// Prints one line per case: model, T, layout, us, TFLOP/s, weight GB/s (bytes of the experts the
// routing touched, read once), tokens/s. Weights and inputs are random (a hash on the device).
//
// Usage: cuda_layer_bench [model ...]   (default: deepseek-v3 qwen3-30b-a3b mixtral-8x7b)
// Environment: BENCH_REPEAT (timed replays, default 20); BENCH_CASES, a comma list of
// tokens:layout (auto|masked|contiguous), default
// "1:auto,128:masked,128:contiguous,4096:contiguous". Per-kernel times: run one case under `ncu
// --clock-control none` (scripts/bench-device.sh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/synthetic.h"
#include "cpu/routing.h"
#include "cuda/cuda_check.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/layer.h"

namespace {

using namespace moerun;

__device__ unsigned long long mix(unsigned long long x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// kind 0: e4m3 codes (no NaN); 1: bf16 uniform in [-scale, scale]; 2: f32 uniform in
// [scale / 2, scale] (FP8 block scales).
__global__ void fill_kernel(void* data, long long n, unsigned long long seed, int kind,
                            float scale) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const unsigned long long h = mix(seed ^ mix(static_cast<unsigned long long>(i)));
    const float u = static_cast<float>(h >> 40) * 0x1p-24f;  // [0, 1)
    if (kind == 0) {
      unsigned char code = static_cast<unsigned char>(h);
      if ((code & 0x7f) == 0x7f) code ^= 1;
      static_cast<unsigned char*>(data)[i] = code;
    } else if (kind == 1) {
      const float v = (2.0f * u - 1.0f) * scale;
      static_cast<unsigned short*>(data)[i] = static_cast<unsigned short>(__float_as_uint(v) >> 16);
    } else {
      static_cast<float*>(data)[i] = scale * (0.5f + 0.5f * u);
    }
  }
}

struct Buffer {
  void* p = nullptr;
  TensorView view;
  Buffer(DType dtype, const Shape& shape) {
    const TensorView sized(nullptr, dtype, shape);
    MOERUN_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(1, sized.nbytes())));
    view = TensorView(p, dtype, shape, {DeviceType::kCuda, 0});
  }
  ~Buffer() { cudaFree(p); }
  void fill(unsigned long long seed, int kind, float scale) {
    fill_kernel<<<1024, 256>>>(p, view.numel(), seed, kind, scale);
    MOERUN_CUDA_CHECK_LAUNCH();
  }
};

void run_case(const std::string& model, std::int64_t tokens, LayoutChoice choice, int repeat) {
  const MoeConfig c = model_preset(model);
  const std::int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int e = c.num_experts;
  const bool fp8 = c.is_fp8();
  Buffer w13(c.weight_dtype, {e, 2 * inter, h}), w2(c.weight_dtype, {e, h, inter});
  const float code_scale = 1.0f / 448.0f;
  w13.fill(1, fp8 ? 0 : 1, fp8 ? 0.0f : 1.0f / std::sqrt(static_cast<float>(h)));
  w2.fill(2, fp8 ? 0 : 1, fp8 ? 0.0f : 1.0f / std::sqrt(static_cast<float>(inter)));
  Buffer w13_scale(DType::kF32, {e, fp8 ? 2 * inter / 128 : 1, fp8 ? h / 128 : 1});
  Buffer w2_scale(DType::kF32, {e, fp8 ? h / 128 : 1, fp8 ? inter / 128 : 1});
  Buffer bias(DType::kF32, {e});
  MoeWeights weights{w13.view, {}, w2.view, {}, {}};
  if (fp8) {
    w13_scale.fill(3, 2, code_scale / std::sqrt(static_cast<float>(h)));
    w2_scale.fill(4, 2, code_scale / std::sqrt(static_cast<float>(inter)));
    weights.w13_scale = w13_scale.view;
    weights.w2_scale = w2_scale.view;
  }
  if (c.routing.mode == RoutingMode::kGroupedTopK) {
    bias.fill(5, 2, 0.1f);
    weights.correction_bias = bias.view;
  }
  Buffer hidden(DType::kBF16, {tokens, h}), out(DType::kBF16, {tokens, h});
  hidden.fill(6, 1, 2.0f);
  const HostTensor logits = random_router_logits(tokens, e, 7);
  Buffer d_logits(DType::kF32, {tokens, e});
  MOERUN_CUDA_CHECK(
      cudaMemcpy(d_logits.p, logits.view().data(), logits.nbytes(), cudaMemcpyHostToDevice));
  // Experts the routing touches (bias ignored: close enough for byte accounting).
  const cpu::TopK routing = cpu::route(c.routing, e, logits.view());
  std::vector<char> touched(static_cast<std::size_t>(e), 0);
  for (std::int64_t i = 0; i < routing.ids.numel(); ++i) touched[routing.ids.data<int>()[i]] = 1;
  const auto used = static_cast<double>(std::count(touched.begin(), touched.end(), 1));

  LayerOptions options;
  options.backend = Backend::kCuda;
  options.layout = choice;
  options.max_tokens = tokens;
  Layer layer(c, weights, options);
  cudaStream_t stream;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  layer.set_stream(stream);
  layer.forward(hidden.view, d_logits.view, out.view);  // warm-up (module load)
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  layer.forward(hidden.view, d_logits.view, out.view);
  MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MOERUN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  cudaEvent_t begin, end;
  MOERUN_CUDA_CHECK(cudaEventCreate(&begin));
  MOERUN_CUDA_CHECK(cudaEventCreate(&end));
  std::vector<float> ms;
  for (int i = 0; i < repeat; ++i) {
    MOERUN_CUDA_CHECK(cudaEventRecord(begin, stream));
    MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    MOERUN_CUDA_CHECK(cudaEventRecord(end, stream));
    MOERUN_CUDA_CHECK(cudaEventSynchronize(end));
    float t = 0;
    MOERUN_CUDA_CHECK(cudaEventElapsedTime(&t, begin, end));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double s = ms[ms.size() / 2] * 1e-3;
  const double flops = 6.0 * static_cast<double>(tokens * c.top_k()) * h * inter;
  const double weight_bytes = used * 3.0 * h * inter * dtype_size(c.weight_dtype);
  std::printf(
      "%-14s T %5lld %-10s %9.1f us %7.1f TFLOP/s %7.0f GB/s(weights) %10.0f tok/s  ws %.2f GB\n",
      model.c_str(), static_cast<long long>(tokens),
      std::string(layout_name(layer.layout_for(tokens))).c_str(), s * 1e6, flops / s * 1e-12,
      weight_bytes / s * 1e-9, static_cast<double>(tokens) / s,
      static_cast<double>(layer.workspace_bytes()) * 1e-9);
  MOERUN_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MOERUN_CUDA_CHECK(cudaGraphDestroy(graph));
  MOERUN_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models;
  for (int i = 1; i < argc; ++i) models.emplace_back(argv[i]);
  if (models.empty()) models = {"deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b"};
  const int repeat = std::getenv("BENCH_REPEAT") ? std::atoi(std::getenv("BENCH_REPEAT")) : 20;
  std::string cases = "1:auto,128:masked,128:contiguous,4096:contiguous";
  if (const char* env = std::getenv("BENCH_CASES")) cases = env;
  try {
    for (const auto& m : models) {
      std::size_t pos = 0;
      while (pos < cases.size()) {
        std::size_t next = cases.find(',', pos);
        if (next == std::string::npos) next = cases.size();
        const std::string item = cases.substr(pos, next - pos);
        pos = next + 1;
        const std::size_t colon = item.find(':');
        const std::int64_t tokens = std::atoll(item.substr(0, colon).c_str());
        const std::string layout = colon == std::string::npos ? "auto" : item.substr(colon + 1);
        const LayoutChoice choice = layout == "masked"       ? LayoutChoice::kMasked
                                    : layout == "contiguous" ? LayoutChoice::kContiguous
                                                             : LayoutChoice::kAuto;
        run_case(m, tokens, choice, repeat);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
