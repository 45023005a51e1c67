// Gated DeltaNet: token recurrence (decode, reference form) and chunkwise WY/UT form (prefill).
// See ops.h for the contract and hybrid-models-and-kernels.md §1.2 / §1.4 for the algebra.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

namespace prfaas::kernels::cpu {
namespace {

constexpr float kL2Eps = 1e-6f;

// dst = src * rsqrt(sum(src^2) + eps) * mul
void L2Normalize(const float* src, int64_t n, float mul, float* dst) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += src[i] * src[i];
  const float inv = mul / std::sqrt(ss + kL2Eps);
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * inv;
}

}  // namespace

void GatedDeltaRuleRecurrent(const GdnShape& sh, const float* q, const float* k, const float* v,
                             const float* g, const float* beta, float scale, float* state,
                             float* out) {
  const int64_t dk = sh.key_dim;
  const int64_t dv = sh.value_dim;
  const int64_t ratio = sh.value_heads / sh.key_heads;
#pragma omp parallel for schedule(static) if (sh.t * sh.value_heads * dk * dv >= (int64_t{1} << 18))
  for (int64_t j = 0; j < sh.value_heads; ++j) {
    const int64_t kh = j / ratio;
    float* s_mat = state + j * dk * dv;
    std::vector<float> qn(dk), kn(dk), u(dv);
    for (int64_t s = 0; s < sh.t; ++s) {
      L2Normalize(q + (s * sh.key_heads + kh) * dk, dk, scale, qn.data());
      L2Normalize(k + (s * sh.key_heads + kh) * dk, dk, 1.0f, kn.data());
      const float alpha = std::exp(g[s * sh.value_heads + j]);
      const float b = beta[s * sh.value_heads + j];
      const float* vs = v + (s * sh.value_heads + j) * dv;
      for (int64_t i = 0; i < dk * dv; ++i) s_mat[i] *= alpha;
      std::fill(u.begin(), u.end(), 0.0f);
      for (int64_t a = 0; a < dk; ++a) {
        const float ka = kn[a];
        const float* row = s_mat + a * dv;
        for (int64_t c = 0; c < dv; ++c) u[c] += row[c] * ka;
      }
      for (int64_t c = 0; c < dv; ++c) u[c] = b * (vs[c] - u[c]);
      float* o = out + (s * sh.value_heads + j) * dv;
      std::fill(o, o + dv, 0.0f);
      for (int64_t a = 0; a < dk; ++a) {
        float* row = s_mat + a * dv;
        const float ka = kn[a];
        const float qa = qn[a];
        for (int64_t c = 0; c < dv; ++c) {
          row[c] += ka * u[c];
          o[c] += row[c] * qa;
        }
      }
    }
  }
}

void GatedDeltaRuleChunked(const GdnShape& sh, const float* q, const float* k, const float* v,
                           const float* g, const float* beta, float scale, float* state, float* out,
                           int64_t chunk_size) {
  const int64_t dk = sh.key_dim;
  const int64_t dv = sh.value_dim;
  const int64_t ratio = sh.value_heads / sh.key_heads;
  const int64_t cs = chunk_size;
#pragma omp parallel for schedule(static) if (sh.t * sh.value_heads * dk * dv >= (int64_t{1} << 18))
  for (int64_t j = 0; j < sh.value_heads; ++j) {
    const int64_t kh = j / ratio;
    float* s_mat = state + j * dk * dv;
    std::vector<float> qc(cs * dk), kc(cs * dk), w(cs * dk), u(cs * dv), vnew(cs * dv);
    std::vector<float> gam(cs), bet(cs), a_mat(cs * cs), qk(cs * cs);
    for (int64_t s0 = 0; s0 < sh.t; s0 += cs) {
      const int64_t len = std::min(cs, sh.t - s0);
      float cum = 0.0f;
      for (int64_t i = 0; i < len; ++i) {
        const int64_t s = s0 + i;
        L2Normalize(q + (s * sh.key_heads + kh) * dk, dk, scale, &qc[i * dk]);
        L2Normalize(k + (s * sh.key_heads + kh) * dk, dk, 1.0f, &kc[i * dk]);
        cum += g[s * sh.value_heads + j];
        gam[i] = cum;
        bet[i] = beta[s * sh.value_heads + j];
      }
      // Strictly lower A[i][l] = beta_i (k_i . k_l) exp(gam_i - gam_l), and the causal Q K^T.
      for (int64_t i = 0; i < len; ++i) {
        for (int64_t l = 0; l <= i; ++l) {
          float kk = 0.0f;
          float qkv = 0.0f;
          for (int64_t a = 0; a < dk; ++a) {
            kk += kc[i * dk + a] * kc[l * dk + a];
            qkv += qc[i * dk + a] * kc[l * dk + a];
          }
          const float decay = std::exp(gam[i] - gam[l]);
          a_mat[i * cs + l] = bet[i] * kk * decay;
          qk[i * cs + l] = qkv * decay;
        }
      }
      // W = (I + A)^-1 diag(beta e^gam) K and U = (I + A)^-1 diag(beta) V by forward substitution.
      for (int64_t i = 0; i < len; ++i) {
        const float wb = bet[i] * std::exp(gam[i]);
        const float* vi = v + ((s0 + i) * sh.value_heads + j) * dv;
        for (int64_t a = 0; a < dk; ++a) w[i * dk + a] = wb * kc[i * dk + a];
        for (int64_t c = 0; c < dv; ++c) u[i * dv + c] = bet[i] * vi[c];
        for (int64_t l = 0; l < i; ++l) {
          const float al = a_mat[i * cs + l];
          for (int64_t a = 0; a < dk; ++a) w[i * dk + a] -= al * w[l * dk + a];
          for (int64_t c = 0; c < dv; ++c) u[i * dv + c] -= al * u[l * dv + c];
        }
      }
      // V_new = U - W S;  O = (Q e^gam) S + causal(QK^T decay) V_new.
      for (int64_t i = 0; i < len; ++i) {
        float* vn = &vnew[i * dv];
        float* o = out + ((s0 + i) * sh.value_heads + j) * dv;
        std::copy(&u[i * dv], &u[i * dv] + dv, vn);
        std::fill(o, o + dv, 0.0f);
        const float eg = std::exp(gam[i]);
        for (int64_t a = 0; a < dk; ++a) {
          const float wa = w[i * dk + a];
          const float qa = qc[i * dk + a] * eg;
          const float* row = s_mat + a * dv;
          for (int64_t c = 0; c < dv; ++c) {
            vn[c] -= wa * row[c];
            o[c] += qa * row[c];
          }
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        float* o = out + ((s0 + i) * sh.value_heads + j) * dv;
        for (int64_t l = 0; l <= i; ++l) {
          const float p = qk[i * cs + l];
          const float* vn = &vnew[l * dv];
          for (int64_t c = 0; c < dv; ++c) o[c] += p * vn[c];
        }
      }
      // S <- e^gam_last S + sum_i e^(gam_last - gam_i) k_i V_new_i^T.
      const float glast = gam[len - 1];
      const float el = std::exp(glast);
      for (int64_t x = 0; x < dk * dv; ++x) s_mat[x] *= el;
      for (int64_t i = 0; i < len; ++i) {
        const float di = std::exp(glast - gam[i]);
        const float* vn = &vnew[i * dv];
        for (int64_t a = 0; a < dk; ++a) {
          const float ka = kc[i * dk + a] * di;
          float* row = s_mat + a * dv;
          for (int64_t c = 0; c < dv; ++c) row[c] += ka * vn[c];
        }
      }
    }
  }
}

}  // namespace prfaas::kernels::cpu
