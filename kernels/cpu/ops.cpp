// Elementwise, normalisation, projection and conv kernels. See ops.h for contracts.
#include "kernels/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace prfaas::kernels::cpu {
namespace {

float Silu(float x) {
  return x / (1.0f + std::exp(-x));
}

// 8-wide float vector (GCC vector extension). With -ffp-contract=off the same instruction sequence
// (mul then add, fixed reduction tree) runs in every clone, so results do not depend on which
// clone the machine picks.
typedef float V8 __attribute__((vector_size(32)));

inline V8 Load8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline float HorizontalSum(V8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// One MR x NR tile of dot products. Every element uses its own accumulator in the same order, so
// the element's value is independent of MR, NR and of its neighbours.
template <int MR, int NR>
inline __attribute__((always_inline)) void DotTile(const float* a, int64_t lda, const float* b,
                                                   int64_t ldb, int64_t k, float* y, int64_t ldy) {
  V8 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V8{0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t kk = 0; kk < k8; kk += 8) {
    V8 av[MR];
    V8 bv[NR];
    for (int i = 0; i < MR; ++i) av[i] = Load8(a + i * lda + kk);
    for (int j = 0; j < NR; ++j) bv[j] = Load8(b + j * ldb + kk);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += av[i] * bv[j];
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = HorizontalSum(acc[i][j]);
      for (int64_t kk = k8; kk < k; ++kk) s += a[i * lda + kk] * b[j * ldb + kk];
      y[i * ldy + j] = s;
    }
  }
}

template <int NR>
inline __attribute__((always_inline)) void DotColumnTile(const float* a, int64_t lda, int64_t m,
                                                         const float* b, int64_t ldb, int64_t k,
                                                         float* y, int64_t ldy) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) DotTile<4, NR>(a + i * lda, lda, b, ldb, k, y + i * ldy, ldy);
  for (; i < m; ++i) DotTile<1, NR>(a + i * lda, lda, b, ldb, k, y + i * ldy, ldy);
}

}  // namespace

__attribute__((target_clones("avx2", "default"))) void DotBlock(const float* a, int64_t lda,
                                                                int64_t m, const float* b,
                                                                int64_t ldb, int64_t n, int64_t k,
                                                                float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) DotColumnTile<4>(a, lda, m, b + j * ldb, ldb, k, y + j, ldy);
  for (; j < n; ++j) DotColumnTile<1>(a, lda, m, b + j * ldb, ldb, k, y + j, ldy);
}

void Embedding(const float* table, int64_t vocab, int64_t dim, std::span<const int32_t> ids,
               float* out) {
  (void)vocab;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::memcpy(out + static_cast<int64_t>(i) * dim, table + static_cast<int64_t>(ids[i]) * dim,
                sizeof(float) * dim);
  }
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * (1.0f + weight[i]);
  }
}

void GatedRmsNorm(const float* x, const float* z, int64_t rows, int64_t dim, const float* weight,
                  float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* zr = z + r * dim;
    float* yr = y + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i] * Silu(zr[i]);
  }
}

void ApplyRope(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, float theta) {
  const int64_t half = rot_dim / 2;
  // inv_freq in float32, as HF computes it, so the trainer and the engine agree.
  float inv_freq[512];
  for (int64_t i = 0; i < half && i < 512; ++i) {
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rot_dim));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float pos = static_cast<float>(positions[r]);
    float cs[512];
    float sn[512];
    for (int64_t i = 0; i < half; ++i) {
      const float ang = pos * inv_freq[i];
      cs[i] = std::cos(ang);
      sn[i] = std::sin(ang);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x + r * row_stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = xh[i];
        const float x2 = xh[i + half];
        xh[i] = x1 * cs[i] - x2 * sn[i];
        xh[i + half] = x2 * cs[i] + x1 * sn[i];
      }
    }
  }
}

void Linear(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, x, static_cast<int>(k), w, static_cast<int>(k), 0.0f, y,
              static_cast<int>(n));
}

void LinearRowInvariant(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y) {
  // Threads split the output columns; each element is computed by exactly one DotTile.
  constexpr int64_t kCols = 64;
  const int64_t tiles = (n + kCols - 1) / kCols;
  // Small products run on the caller's thread: waking a team costs more than it saves.
#pragma omp parallel for schedule(static) if (m * n * k >= (int64_t{1} << 21))
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t j0 = t * kCols;
    const int64_t nj = std::min(kCols, n - j0);
    DotBlock(x, k, m, w + j0 * k, k, nj, k, y + j0, n);
  }
}

void SwiGLU(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Silu(gate[i]) * up[i];
}

void SigmoidGateMul(const float* x, const float* gate, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] / (1.0f + std::exp(-gate[i]));
}

void CausalConv1d(const float* x, int64_t t, int64_t channels, const float* w, int64_t k,
                  float* state, float* y) {
  const int64_t hist = k - 1;
  // Row r of the virtual input concat(state, x).
  auto row = [&](int64_t r) -> const float* {
    return r < hist ? state + r * channels : x + (r - hist) * channels;
  };
  for (int64_t s = 0; s < t; ++s) {
    float* ys = y + s * channels;
    for (int64_t c = 0; c < channels; ++c) {
      float acc = 0.0f;
      for (int64_t i = 0; i < k; ++i) acc += w[c * k + i] * row(s + i)[c];
      ys[c] = Silu(acc);
    }
  }
  // New state: the last k-1 rows of concat(state, x). Rows still in the old state move up first
  // (in order, so no row is overwritten before it is read).
  if (hist == 0) return;
  for (int64_t r = 0; r < hist; ++r) {
    const int64_t src = t + r;
    if (src < hist) {
      std::memmove(state + r * channels, state + src * channels, sizeof(float) * channels);
    } else {
      std::memcpy(state + r * channels, x + (src - hist) * channels, sizeof(float) * channels);
    }
  }
}

}  // namespace prfaas::kernels::cpu
