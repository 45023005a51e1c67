// Benchmark of the Gated DeltaNet and conv1d GPU kernels at Qwen3-Next-80B GDN shapes (16 key
// heads, 32 value heads, d = 128, conv over 8192 channels, kernel 4).
//   prefill: batch 1 at 4K / 16K / 64K tokens and an 8-sequence varlen batch of 16K tokens, each
//            reading initial states from and writing final states to the slot pool (the same work
//            bench/gpu/peers/fla_gdn.py asks of fla's chunk_gated_delta_rule);
//   decode:  one token for 1 / 32 / 128 sequences, state pools rotated so that the states come
//            from HBM, not L2 (timed as a CUDA graph of back-to-back steps);
//   conv1d:  16K-token prefill and a 128-sequence update.
// Prints `RESULT kernel=... shape=... ms=... tflops=... gbps=...` lines (median of the timed
// repetitions); with an output directory argument also writes them to DIR/bench_gdn.txt.
// FLOPs: the chunked algorithm's matrix products per 64-token chunk and value head,
// 2C^2 (3 d_k + 2 d_v) + 6 C d_k d_v; bytes: inputs read once, outputs written once, states
// read and written once (METHOD.md's minimum).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/common.h"
#include "kernels/cuda/conv1d.h"
#include "kernels/cuda/gdn.h"

namespace prfaas::kernels::cuda {
namespace {

constexpr int kHk = 16, kHv = 32, D = kGdnHeadDim;
constexpr int kConvChannels = 2 * kHk * D + kHv * D;  // 8192
constexpr int kConvK = 4;
FILE* g_out = nullptr;

__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// Uniform in [lo, hi), a pure function of (seed, i): fresh non-zero data without host transfers.
template <typename T>
__global__ void fill_kernel(T* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float u = hash32(seed * 0x9e3779b97f4a7c15ULL + i) * (1.0f / 4294967296.0f);
    p[i] = from_float<T>(lo + (hi - lo) * u);
  }
}
template <typename T>
T* Alloc(int64_t n, uint64_t seed, float lo, float hi) {
  T* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, sizeof(T) * std::max<int64_t>(n, 1)));
  fill_kernel<<<1024, 256>>>(p, n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
  return p;
}
int32_t* Upload(const std::vector<int32_t>& v) {
  int32_t* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, sizeof(int32_t) * v.size()));
  CUDA_CHECK(cudaMemcpy(p, v.data(), sizeof(int32_t) * v.size(), cudaMemcpyHostToDevice));
  return p;
}

template <typename F>
double MedianMs(F&& fn, int warmup, int reps, cudaStream_t stream = nullptr) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(b, stream));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// flops == 0 leaves tflops out (memory-bound kernels: bench/gpu/table.py then rates them against
// the copy ceiling); a non-empty peer names the fla line of the same shape for the ratio.
void Report(const std::string& kernel, const std::string& shape, double ms, double flops,
            double bytes, const std::string& peer = "") {
  char line[512];
  int n = std::snprintf(line, sizeof(line), "RESULT kernel=%s shape=%s ms=%.5f", kernel.c_str(),
                        shape.c_str(), ms);
  if (flops > 0) n += std::snprintf(line + n, sizeof(line) - n, " tflops=%.2f", flops / ms * 1e-9);
  n += std::snprintf(line + n, sizeof(line) - n, " gbps=%.1f", bytes / ms * 1e-6);
  if (!peer.empty()) n += std::snprintf(line + n, sizeof(line) - n, " peer=%s", peer.c_str());
  std::snprintf(line + n, sizeof(line) - n, "\n");
  std::fputs(line, stdout);
  std::fflush(stdout);
  if (g_out) std::fputs(line, g_out);
}

double ChunkFlops(const std::vector<int>& lens) {
  constexpr double C = kGdnChunk;
  double chunks = 0;
  for (int l : lens) chunks += (l + kGdnChunk - 1) / kGdnChunk;
  return chunks * kHv * (2 * C * C * (3 * D + 2 * D) + 6 * C * D * D);
}

void BenchPrefill(const std::string& name, const std::vector<int>& lens) {
  std::vector<int32_t> cu{0}, slots;
  for (size_t s = 0; s < lens.size(); ++s) {
    cu.push_back(cu.back() + lens[s]);
    slots.push_back(static_cast<int32_t>(s));
  }
  const int64_t T = cu.back(), N = static_cast<int64_t>(lens.size());
  auto* q = Alloc<__nv_bfloat16>(T * kHk * D, 1, -1.0f, 1.0f);
  auto* k = Alloc<__nv_bfloat16>(T * kHk * D, 2, -1.0f, 1.0f);
  auto* v = Alloc<__nv_bfloat16>(T * kHv * D, 3, -1.0f, 1.0f);
  auto* ga = Alloc<__nv_bfloat16>(T * kHv, 4, -6.0f, 0.0f);
  auto* gb = Alloc<__nv_bfloat16>(T * kHv, 5, -3.0f, 3.0f);
  auto* a_log = Alloc<float>(kHv, 6, 0.0f, 1.5f);
  auto* dt_bias = Alloc<float>(kHv, 7, -0.3f, 0.3f);
  auto* pool = Alloc<float>(N * kHv * D * D, 8, -0.5f, 0.5f);
  __nv_bfloat16* out = nullptr;
  CUDA_CHECK(cudaMalloc(&out, sizeof(__nv_bfloat16) * T * kHv * D));
  int32_t* dcu = Upload(cu);
  int32_t* dslots = Upload(slots);
  GdnArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.q_stride = a.k_stride = kHk * D;
  a.v_stride = kHv * D;
  a.gates = {ga, gb, kHv, a_log, dt_bias};
  a.out = out;
  a.cu_seqlens = dcu;
  a.slots = dslots;
  a.states = {pool, static_cast<int64_t>(kHv) * D * D};
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.num_seqs = static_cast<int32_t>(N);
  a.total_tokens = static_cast<int32_t>(T);
  a.key_heads = kHk;
  a.value_heads = kHv;
  const size_t ws_bytes = gdn_chunk_prefill_workspace_bytes(a.total_tokens, a.num_seqs, kHk, kHv);
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  const double ms = MedianMs([&] { gdn_chunk_prefill(a, ws, ws_bytes, nullptr); }, 3, 15);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double bytes = 2.0 * T * (2 * kHk * D + 2 * kHv * D + 2 * kHv) + 8.0 * N * kHv * D * D;
  Report("gdn_chunk_prefill", name + "_T" + std::to_string(T) + "_N" + std::to_string(N), ms,
         ChunkFlops(lens), bytes, "fla_chunk_gated_delta_rule");
  for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v),
                  static_cast<void*>(ga), static_cast<void*>(gb), static_cast<void*>(a_log),
                  static_cast<void*>(dt_bias), static_cast<void*>(pool), static_cast<void*>(out),
                  static_cast<void*>(dcu), static_cast<void*>(dslots), ws})
    CUDA_CHECK(cudaFree(p));
}

// Captures `steps` launches of fn into a graph; returns ms per launch (median over replays).
template <typename F>
double GraphMsPerStep(F&& fn, int steps) {
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < steps; ++i) fn(i, s);
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  const double ms = MedianMs([&] { CUDA_CHECK(cudaGraphLaunch(ge, s)); }, 2, 10, s);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaGraphExecDestroy(ge));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaStreamDestroy(s));
  return ms / steps;
}

void BenchDecode(int batch) {
  const int64_t state_bytes = int64_t{kHv} * D * D * 4;
  // Enough disjoint slot sets that one graph pass touches > 4x the L2.
  const int rot = static_cast<int>(std::max<int64_t>(2, (256ll << 20) / (batch * state_bytes)));
  const int64_t slots_total = int64_t{rot} * batch;
  auto* x = Alloc<__nv_bfloat16>(int64_t{batch} * kConvChannels, 11, -1.0f, 1.0f);
  auto* ab = Alloc<__nv_bfloat16>(int64_t{batch} * 2 * kHv, 12, -3.0f, 1.0f);
  auto* a_log = Alloc<float>(kHv, 13, 0.0f, 1.5f);
  auto* dt_bias = Alloc<float>(kHv, 14, -0.3f, 0.3f);
  auto* pool = Alloc<float>(slots_total * kHv * D * D, 15, -0.5f, 0.5f);
  __nv_bfloat16* out = nullptr;
  CUDA_CHECK(cudaMalloc(&out, sizeof(__nv_bfloat16) * batch * kHv * D));
  std::vector<int32_t*> slot_sets;
  for (int r = 0; r < rot; ++r) {
    std::vector<int32_t> sl(batch);
    for (int b = 0; b < batch; ++b) sl[b] = r * batch + b;
    slot_sets.push_back(Upload(sl));
  }
  GdnArgs a;
  a.q = x;
  a.k = x + kHk * D;
  a.v = x + 2 * kHk * D;
  a.q_stride = a.k_stride = a.v_stride = kConvChannels;
  a.gates = {ab + kHv, ab, 2 * kHv, a_log, dt_bias};
  a.out = out;
  a.states = {pool, static_cast<int64_t>(kHv) * D * D};
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.num_seqs = batch;
  a.total_tokens = batch;
  a.key_heads = kHk;
  a.value_heads = kHv;
  const int steps = std::max(rot, 16);
  const double ms = GraphMsPerStep(
      [&](int i, cudaStream_t s) {
        GdnArgs ai = a;
        ai.slots = slot_sets[i % rot];
        gdn_decode(ai, s);
      },
      steps);
  const double bytes =
      2.0 * batch * state_bytes + 2.0 * batch * (2 * kHk * D + 2 * kHv * D + 2 * kHv);
  Report("gdn_decode", "B" + std::to_string(batch), ms, 0.0, bytes);
  for (auto* p : slot_sets) CUDA_CHECK(cudaFree(p));
  for (void* p : {static_cast<void*>(x), static_cast<void*>(ab), static_cast<void*>(a_log),
                  static_cast<void*>(dt_bias), static_cast<void*>(pool), static_cast<void*>(out)})
    CUDA_CHECK(cudaFree(p));
}

void BenchConv() {
  const int T = 16384, B = 128;
  auto* x = Alloc<__nv_bfloat16>(int64_t{T} * kConvChannels, 21, -1.0f, 1.0f);
  auto* w = Alloc<float>(int64_t{kConvChannels} * kConvK, 22, -0.5f, 0.5f);
  const int64_t stride = int64_t{kConvK - 1} * kConvChannels;
  auto* pool = Alloc<float>(B * stride, 23, -1.0f, 1.0f);
  __nv_bfloat16* y = nullptr;
  CUDA_CHECK(cudaMalloc(&y, sizeof(__nv_bfloat16) * T * kConvChannels));
  std::vector<int32_t> slots(B);
  for (int b = 0; b < B; ++b) slots[b] = b;
  int32_t* dslots = Upload(slots);
  int32_t* dcu = Upload({0, T});
  Conv1dArgs a;
  a.x = x;
  a.x_stride = kConvChannels;
  a.weight = w;
  a.y = y;
  a.cu_seqlens = dcu;
  a.slots = dslots;
  a.states = {pool, stride};
  a.num_seqs = 1;
  a.total_tokens = T;
  a.channels = kConvChannels;
  a.kernel_size = kConvK;
  double ms = MedianMs([&] { causal_conv1d_prefill(a, nullptr); }, 3, 15);
  Report("causal_conv1d_prefill", "T" + std::to_string(T) + "_C8192", ms, 0.0,
         4.0 * T * kConvChannels);
  a.num_seqs = B;
  a.total_tokens = B;
  a.cu_seqlens = nullptr;
  ms = GraphMsPerStep([&](int, cudaStream_t s) { causal_conv1d_update(a, s); }, 32);
  Report("causal_conv1d_update", "B" + std::to_string(B) + "_C8192", ms, 0.0,
         B * kConvChannels * (4.0 + 8.0 * (kConvK - 1)));
  for (void* p : {static_cast<void*>(x), static_cast<void*>(w), static_cast<void*>(pool),
                  static_cast<void*>(y), static_cast<void*>(dslots), static_cast<void*>(dcu)})
    CUDA_CHECK(cudaFree(p));
}

}  // namespace
}  // namespace prfaas::kernels::cuda

int main(int argc, char** argv) {
  using namespace prfaas::kernels::cuda;
  if (!DeviceAvailable()) {
    std::fprintf(stderr, "bench_gdn: no CUDA device\n");
    return 1;
  }
  // usage: prfaas_bench_gdn [OUT_DIR|-] [CASE]   (CASE: run only shapes whose key contains it)
  if (argc > 1 && std::string(argv[1]) != "-") {
    g_out = std::fopen((std::string(argv[1]) + "/bench_gdn.txt").c_str(), "w");
    if (!g_out) {
      std::perror("bench_gdn: output file");
      return 1;
    }
  }
  const std::string only = argc > 2 ? argv[2] : "";
  auto want = [&](const std::string& key) { return key.find(only) != std::string::npos; };
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  // Shapes shared with bench/gpu/peers/fla_gdn.py.
  if (want("prefill_b1_T4096")) BenchPrefill("b1", {4096});
  if (want("prefill_b1_T16384")) BenchPrefill("b1", {16384});
  if (want("prefill_b1_T65536")) BenchPrefill("b1", {65536});
  if (want("prefill_varlen8"))
    BenchPrefill("varlen8", {3000, 1024, 4096, 777, 2048, 1500, 2560, 1379});
  for (int b : {1, 32, 128}) {
    if (want("decode_B" + std::to_string(b))) BenchDecode(b);
  }
  if (want("conv1d")) BenchConv();
  if (g_out) std::fclose(g_out);
  return 0;
}
