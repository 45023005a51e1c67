// cuBLASLt GEMMs with a cached handle, workspace and per-shape plans, plus the plain reference.
// See gemm.h.
#include <cublasLt.h>

#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/common.h"
#include "kernels/cuda/gemm.h"

#define CUBLAS_CHECK(expr)                                                               \
  do {                                                                                   \
    const cublasStatus_t prfaas_blas_st_ = (expr);                                       \
    if (prfaas_blas_st_ != CUBLAS_STATUS_SUCCESS) {                                      \
      std::fprintf(stderr, "cuBLASLt error %s at %s:%d: %s\n",                           \
                   cublasLtGetStatusString(prfaas_blas_st_), __FILE__, __LINE__, #expr); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace prfaas::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t CudaType(DType t) {
  return t == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// One planned product: descriptors plus the heuristic's algorithm for this exact shape.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool use_ref = false;  // cuBLASLt offers no algorithm (e.g. unaligned bf16 rows): plain kernel
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, DType, DType, bool>;

// Per device and thread: handle, workspace and plans. Lives until thread exit.
struct Context {
  int device = -1;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;

  explicit Context(int dev) : device(dev) {
    CUBLAS_CHECK(cublasLtCreate(&handle));
    CUDA_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
  }
  ~Context() {
    plans.clear();
    // The runtime may already be torn down at thread/process exit; ignore errors here.
    if (workspace) (void)cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

Context& ContextFor(int device) {
  thread_local std::map<int, std::unique_ptr<Context>> contexts;
  auto& ctx = contexts[device];
  if (!ctx) ctx = std::make_unique<Context>(device);
  return *ctx;
}

// Row-major y[m,n] = x[m,k] w[n,k]^T is column-major Y'[n,m] = W'^T X' with W' = w viewed as a
// column-major [k, n] matrix and X' = x as [k, m]: A = W' transposed, B = X', C = Y'.
const Plan& GetPlan(Context& ctx, const GemmArgs& g) {
  const PlanKey key{g.m, g.n, g.k, g.in, g.out, g.beta != 0.0f};
  auto& slot = ctx.plans[key];
  if (slot) return *slot;
  auto p = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CudaType(g.in), u(g.k), u(g.n), g.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CudaType(g.in), u(g.k), u(g.m), g.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CudaType(g.out), u(g.n), u(g.m), g.n));
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // NOT_SUPPORTED means "no algorithm for this shape", handled like found == 0.
  const cublasStatus_t hst = cublasLtMatmulAlgoGetHeuristic(ctx.handle, p->op, p->a, p->b, p->c,
                                                            p->c, pref, 1, &result, &found);
  if (hst != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(hst);
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0) {
    std::fprintf(stderr, "cuBLASLt: no algorithm for m=%lld n=%lld k=%lld; using LinearRef\n",
                 static_cast<long long>(g.m), static_cast<long long>(g.n),
                 static_cast<long long>(g.k));
    p->use_ref = true;
  }
  p->algo = result.algo;
  slot = std::move(p);
  return *slot;
}

template <typename In, typename Out>
__global__ void LinearRefKernel(const In* x, const In* w, Out* y, int64_t m, int64_t n, int64_t k,
                                float beta) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e >= m * n) return;
  const int64_t i = e / n, j = e % n;
  float acc = 0.0f;
  for (int64_t kk = 0; kk < k; ++kk) acc += to_float(x[i * k + kk]) * to_float(w[j * k + kk]);
  if (beta != 0.0f) acc += beta * to_float(y[e]);
  y[e] = from_float<Out>(acc);
}

template <typename In>
void LaunchRef(const GemmArgs& g, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(ceil_div<int64_t>(g.m * g.n, 128));
  const auto* x = static_cast<const In*>(g.x);
  const auto* w = static_cast<const In*>(g.w);
  if (g.out == DType::kF32) {
    LinearRefKernel<<<blocks, 128, 0, stream>>>(x, w, static_cast<float*>(g.y), g.m, g.n, g.k,
                                                g.beta);
  } else {
    LinearRefKernel<<<blocks, 128, 0, stream>>>(x, w, static_cast<__nv_bfloat16*>(g.y), g.m, g.n,
                                                g.k, g.beta);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void Linear(const GemmArgs& g, cudaStream_t stream) {
  if (g.m == 0 || g.n == 0) return;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  Context& ctx = ContextFor(device);
  const Plan& p = GetPlan(ctx, g);
  if (p.use_ref) {
    LinearRef(g, stream);
    return;
  }
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(ctx.handle, p.op, &alpha, g.w, p.a, g.x, p.b, &g.beta, g.y, p.c, g.y,
                              p.c, &p.algo, ctx.workspace, kWorkspaceBytes, stream));
}

void LinearRef(const GemmArgs& g, cudaStream_t stream) {
  if (g.m == 0 || g.n == 0) return;
  if (g.in == DType::kF32) {
    LaunchRef<float>(g, stream);
  } else {
    LaunchRef<__nv_bfloat16>(g, stream);
  }
}

}  // namespace prfaas::kernels::cuda
