// Attention kernel benchmark (kernels/cuda/attention.h) at Qwen3-Next-80B attention shapes
// (16 q heads, 2 kv heads, head_dim 256; also 128), bf16, paged cache with block size 64 and
// shuffled block tables.
//
// Prefill (causal, first_pos 0, K/V cache write included): batch 1 at 4K / 16K / 64K, head_dim 128
// at 16K, and a varlen batch of 8 sequences. FLOPs = 4 * head_dim * q_heads * sum_s T_s (T_s + 1)/2
// (QK^T and PV over the causal half, counted exactly). The peer (bench/gpu/peers/sdpa.py) prints
// the same shape keys; run.sh pairs them by `peer=` and `shape=`.
// Decode (one token per sequence, split-K): batch 1 (64K context, larger than L2), 32 and 128
// (contexts uniform in [1K, 16K], fixed seed). Minimum bytes = K and V of every context token
// read once + q read + out written + the new K/V row written; GB/s over the device-to-device copy
// rate measured in this run (bytes read + written).
//
// Output: `RESULT kernel=... shape=... ms=... [tflops=...] [gbps=...] [peer=...]` lines on stdout
// (medians of event-timed repetitions); with an argument DIR, the same lines go to
// DIR/attention.txt. Before timing, the 4K prefill and batch-32 decode outputs are checked against
// the reference kernels (relative error printed; the process fails above 1e-2).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.h"

namespace {

using prfaas::kernels::cuda::AttentionBatch;
using bf16 = __nv_bfloat16;
namespace kc = prfaas::kernels::cuda;

constexpr int kQHeads = 16, kKvHeads = 2, kBlock = 64;

FILE* g_raw = nullptr;

void Emit(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (g_raw != nullptr) std::fprintf(g_raw, "%s\n", line.c_str());
}

__global__ void FillRandom(bf16* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = static_cast<float>(x >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * amp);
  }
}

bf16* RandomDevice(size_t n, uint64_t seed, float amp) {
  bf16* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, n * sizeof(bf16)));
  FillRandom<<<1024, 256>>>(p, n, seed, amp);
  CUDA_CHECK_LAUNCH();
  return p;
}

template <typename T>
T* ToDevice(const std::vector<T>& h) {
  T* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, h.size() * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Median milliseconds of `reps` event-timed calls of fn after `warmup` calls.
template <typename F>
double MedianMs(F&& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    fn();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// A batch with its device buffers: new tokens per sequence, cached prefix per sequence.
struct Setup {
  AttentionBatch b;
  std::vector<void*> owned;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  int64_t out_elems = 0;
  ~Setup() {
    for (void* p : owned) CUDA_CHECK(cudaFree(p));
  }
};

void Build(Setup& st, const std::vector<int>& new_tokens, const std::vector<int>& first_pos,
           int head_dim, bool decode, uint64_t seed) {
  const int n = static_cast<int>(new_tokens.size());
  const int row = kKvHeads * head_dim;
  std::vector<int32_t> cu(n + 1, 0);
  int max_new = 0, max_ctx = 0, max_blocks = 1;
  for (int s = 0; s < n; ++s) {
    cu[s + 1] = cu[s] + new_tokens[s];
    max_new = std::max(max_new, new_tokens[s]);
    max_ctx = std::max(max_ctx, first_pos[s] + new_tokens[s]);
    max_blocks = std::max(max_blocks, (first_pos[s] + new_tokens[s] + kBlock - 1) / kBlock);
  }
  const int total = cu[n];
  int64_t pool_blocks = 0;
  std::vector<int32_t> tables(static_cast<size_t>(n) * max_blocks, 0);
  std::vector<int32_t> ids;
  for (int s = 0; s < n; ++s) pool_blocks += (first_pos[s] + new_tokens[s] + kBlock - 1) / kBlock;
  ids.resize(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  int64_t next = 0;
  for (int s = 0; s < n; ++s) {
    const int nb = (first_pos[s] + new_tokens[s] + kBlock - 1) / kBlock;
    for (int i = 0; i < nb; ++i) tables[static_cast<size_t>(s) * max_blocks + i] = ids[next++];
  }
  const int64_t block_stride = 2LL * kBlock * row;  // engine layout: [block][K|V][64][row]
  bf16* pool = RandomDevice(static_cast<size_t>(pool_blocks) * block_stride, seed + 1, 1.0f);
  bf16* q = RandomDevice(static_cast<size_t>(total) * kQHeads * head_dim, seed + 2, 1.5f);
  bf16* k = RandomDevice(static_cast<size_t>(total) * row, seed + 3, 1.5f);
  bf16* v = RandomDevice(static_cast<size_t>(total) * row, seed + 4, 1.0f);
  bf16* out = nullptr;
  st.out_elems = static_cast<int64_t>(total) * kQHeads * head_dim;
  CUDA_CHECK(cudaMalloc(&out, st.out_elems * sizeof(bf16)));
  int32_t* d_cu = ToDevice(cu);
  std::vector<int32_t> fp(first_pos.begin(), first_pos.end());
  int32_t* d_first = ToDevice(fp);
  int32_t* d_tables = ToDevice(tables);
  st.owned = {pool, q, k, v, out, d_cu, d_first, d_tables};
  AttentionBatch& b = st.b;
  b.q = q;
  b.k_new = k;
  b.v_new = v;
  b.out = out;
  b.cu_seqlens = d_cu;
  b.first_pos = d_first;
  b.cache.k_cache = pool;
  b.cache.v_cache = pool + static_cast<int64_t>(kBlock) * row;
  b.cache.block_stride = block_stride;
  b.cache.block_size = kBlock;
  b.cache.block_tables = d_tables;
  b.cache.block_table_stride = max_blocks;
  b.num_seqs = n;
  b.total_tokens = total;
  b.max_new_tokens = max_new;
  b.max_context = max_ctx;
  b.q_heads = kQHeads;
  b.kv_heads = kKvHeads;
  b.head_dim = head_dim;
  b.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  if (decode) {
    st.ws_bytes = kc::AttentionDecodeWorkspaceBytes(n, kQHeads, head_dim, max_ctx);
    if (st.ws_bytes > 0) {
      CUDA_CHECK(cudaMalloc(&st.ws, st.ws_bytes));
      st.owned.push_back(st.ws);
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

// Relative error of the fast kernel's output against the reference kernel's on the same batch.
double CheckAgainstRef(Setup& st, bool decode) {
  std::vector<bf16> fast(st.out_elems), ref(st.out_elems);
  CUDA_CHECK(cudaMemset(st.b.out, 0xFF, st.out_elems * sizeof(bf16)));
  if (decode) {
    kc::AttentionDecode(st.b, st.ws, st.ws_bytes, nullptr);
  } else {
    kc::AttentionPrefill(st.b, nullptr);
  }
  CUDA_CHECK(
      cudaMemcpy(fast.data(), st.b.out, st.out_elems * sizeof(bf16), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemset(st.b.out, 0xFF, st.out_elems * sizeof(bf16)));
  kc::AttentionPrefillRef(st.b, nullptr);
  CUDA_CHECK(cudaMemcpy(ref.data(), st.b.out, st.out_elems * sizeof(bf16), cudaMemcpyDeviceToHost));
  double e2 = 0, r2 = 0;
  for (int64_t i = 0; i < st.out_elems; ++i) {
    const double f = __bfloat162float(fast[i]), r = __bfloat162float(ref[i]);
    if (std::isnan(f) || std::isnan(r)) return INFINITY;
    e2 += (f - r) * (f - r);
    r2 += r * r;
  }
  return std::sqrt(e2 / r2);
}

double CopyGbps() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms =
      MedianMs([&] { CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 3, 20);
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

void BenchPrefill(const std::string& shape, const std::vector<int>& lens, int head_dim, int reps) {
  Setup st;
  Build(st, lens, std::vector<int>(lens.size(), 0), head_dim, false, 42);
  double flops = 0;
  for (int t : lens) flops += 4.0 * head_dim * kQHeads * (static_cast<double>(t) * (t + 1) / 2);
  const double ms = MedianMs([&] { kc::AttentionPrefill(st.b, nullptr); }, 2, reps);
  char line[512];
  std::snprintf(line, sizeof line,
                "RESULT kernel=attn_prefill shape=%s ms=%.4f tflops=%.1f peer=sdpa_flash",
                shape.c_str(), ms, flops / (ms * 1e-3) / 1e12);
  Emit(line);
}

void BenchDecode(const std::string& shape, const std::vector<int>& ctx, int head_dim, double copy) {
  Setup st;
  std::vector<int> first(ctx.size());
  for (size_t i = 0; i < ctx.size(); ++i) first[i] = ctx[i] - 1;
  Build(st, std::vector<int>(ctx.size(), 1), first, head_dim, true, 7);
  double bytes = 0;
  const double row_bytes = 2.0 * kKvHeads * head_dim * 2;  // K + V, bf16
  for (int c : ctx) bytes += c * row_bytes + row_bytes + 2.0 * kQHeads * head_dim * 2;
  const double ms =
      MedianMs([&] { kc::AttentionDecode(st.b, st.ws, st.ws_bytes, nullptr); }, 5, 50);
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  char line[512];
  std::snprintf(line, sizeof line,
                "RESULT kernel=attn_decode shape=%s ms=%.4f gbps=%.0f copy_gbps=%.0f pct_copy=%.1f",
                shape.c_str(), ms, gbps, copy, 100.0 * gbps / copy);
  Emit(line);
}

}  // namespace

int main(int argc, char** argv) {
  if (!kc::DeviceAvailable()) {
    std::printf("bench_attention: no CUDA device\n");
    return 0;
  }
  if (argc > 1) {
    const std::string path = std::string(argv[1]) + "/attention.txt";
    g_raw = std::fopen(path.c_str(), "w");
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Emit(std::string("# device: ") + prop.name);

  {  // correctness gates before any timing
    Setup st;
    Build(st, {4096}, {0}, 256, false, 1);
    const double e1 = CheckAgainstRef(st, false);
    Setup sd;
    std::vector<int> ctx(32), first(32);
    std::mt19937 rng(3);
    for (int i = 0; i < 32; ++i) ctx[i] = std::uniform_int_distribution<int>(1, 9000)(rng);
    for (int i = 0; i < 32; ++i) first[i] = ctx[i] - 1;
    Build(sd, std::vector<int>(32, 1), first, 256, true, 2);
    const double e2 = CheckAgainstRef(sd, true);
    char line[256];
    std::snprintf(line, sizeof line,
                  "CHECK attn_prefill_T4096 rel_err=%.2e attn_decode_b32 rel_err=%.2e", e1, e2);
    Emit(line);
    if (!(e1 <= 1e-2 && e2 <= 1e-2)) {
      Emit("CHECK FAILED: fast kernels disagree with the reference kernels");
      return 1;
    }
  }

  const double copy = CopyGbps();
  char line[256];
  std::snprintf(line, sizeof line, "RESULT kernel=d2d_copy shape=2GiB gbps=%.0f", copy);
  Emit(line);

  BenchPrefill("T4096_b1_hd256", {4096}, 256, 20);
  BenchPrefill("T16384_b1_hd256", {16384}, 256, 10);
  BenchPrefill("T65536_b1_hd256", {65536}, 256, 3);
  BenchPrefill("T16384_b1_hd128", {16384}, 128, 10);
  BenchPrefill("varlen8_T20480_hd256", {4096, 1024, 8192, 2048, 512, 3072, 256, 1280}, 256, 10);

  std::mt19937 rng(11);
  auto mixed = [&](int n) {
    std::vector<int> c(n);
    for (int& x : c) x = std::uniform_int_distribution<int>(1024, 16384)(rng);
    return c;
  };
  BenchDecode("b1_ctx65536_hd256", {65536}, 256, copy);
  BenchDecode("b32_ctx1k-16k_hd256", mixed(32), 256, copy);
  BenchDecode("b128_ctx1k-16k_hd256", mixed(128), 256, copy);
  BenchDecode("b128_ctx1k-16k_hd128", mixed(128), 128, copy);
  if (g_raw != nullptr) std::fclose(g_raw);
  return 0;
}
