// Float64 reference kernels (tests only). See ref.h.
#include "kernels/cpu/ref.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace prfaas::kernels::cpu::ref {
namespace {
double Silu(double x) {
  return x / (1.0 + std::exp(-x));
}
double Sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
}  // namespace

void Embedding(const double* table, int64_t vocab, int64_t dim, std::span<const int32_t> ids,
               double* out) {
  (void)vocab;
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < dim; ++c) out[i * dim + c] = table[ids[i] * dim + c];
}

void RmsNorm(const double* x, int64_t rows, int64_t dim, const double* weight, double eps,
             double* y) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * inv * (1.0 + weight[i]);
  }
}

void GatedRmsNorm(const double* x, const double* z, int64_t rows, int64_t dim, const double* weight,
                  double eps, double* y) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = x[r * dim + i] * inv * weight[i] * Silu(z[r * dim + i]);
  }
}

void ApplyRope(double* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, float theta) {
  const int64_t half = rot_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      const float inv_freq =
          1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rot_dim));
      const double ang = static_cast<double>(static_cast<float>(positions[r]) * inv_freq);
      const double c = std::cos(ang);
      const double s = std::sin(ang);
      for (int64_t h = 0; h < heads; ++h) {
        double* xh = x + r * row_stride + h * head_dim;
        const double x1 = xh[i];
        const double x2 = xh[i + half];
        xh[i] = x1 * c - x2 * s;
        xh[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

void Linear(const double* x, int64_t m, int64_t k, const double* w, int64_t n, double* y) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t a = 0; a < k; ++a) s += x[i * k + a] * w[j * k + a];
      y[i * n + j] = s;
    }
}

void SwiGLU(const double* gate, const double* up, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Silu(gate[i]) * up[i];
}

void SigmoidGateMul(const double* x, const double* gate, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * Sigmoid(gate[i]);
}

void CausalConv1d(const double* x, int64_t t, int64_t channels, const double* w, int64_t k,
                  double* state, double* y) {
  const int64_t hist = k - 1;
  std::vector<double> xx((hist + t) * channels);
  std::copy(state, state + hist * channels, xx.begin());
  std::copy(x, x + t * channels, xx.begin() + hist * channels);
  for (int64_t s = 0; s < t; ++s)
    for (int64_t c = 0; c < channels; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i) acc += w[c * k + i] * xx[(s + i) * channels + c];
      y[s * channels + c] = Silu(acc);
    }
  std::copy(xx.end() - hist * channels, xx.end(), state);
}

void GatedDeltaRuleRecurrent(const GdnShape& sh, const double* q, const double* k, const double* v,
                             const double* g, const double* beta, double scale, double* state,
                             double* out) {
  const int64_t dk = sh.key_dim, dv = sh.value_dim, ratio = sh.value_heads / sh.key_heads;
  std::vector<double> qn(dk), kn(dk), u(dv);
  for (int64_t s = 0; s < sh.t; ++s) {
    for (int64_t j = 0; j < sh.value_heads; ++j) {
      const int64_t kh = j / ratio;
      const double* qs = q + (s * sh.key_heads + kh) * dk;
      const double* ks = k + (s * sh.key_heads + kh) * dk;
      double qq = 0, kk = 0;
      for (int64_t a = 0; a < dk; ++a) {
        qq += qs[a] * qs[a];
        kk += ks[a] * ks[a];
      }
      for (int64_t a = 0; a < dk; ++a) {
        qn[a] = qs[a] / std::sqrt(qq + 1e-6) * scale;
        kn[a] = ks[a] / std::sqrt(kk + 1e-6);
      }
      double* st = state + j * dk * dv;
      const double alpha = std::exp(g[s * sh.value_heads + j]);
      const double b = beta[s * sh.value_heads + j];
      const double* vs = v + (s * sh.value_heads + j) * dv;
      for (int64_t x = 0; x < dk * dv; ++x) st[x] *= alpha;
      for (int64_t c = 0; c < dv; ++c) {
        double mem = 0;
        for (int64_t a = 0; a < dk; ++a) mem += st[a * dv + c] * kn[a];
        u[c] = b * (vs[c] - mem);
      }
      for (int64_t a = 0; a < dk; ++a)
        for (int64_t c = 0; c < dv; ++c) st[a * dv + c] += kn[a] * u[c];
      double* o = out + (s * sh.value_heads + j) * dv;
      for (int64_t c = 0; c < dv; ++c) {
        double acc = 0;
        for (int64_t a = 0; a < dk; ++a) acc += st[a * dv + c] * qn[a];
        o[c] = acc;
      }
    }
  }
}

void CausalAttention(const double* q, int64_t t, int64_t q_heads, int64_t first_pos,
                     const double* k, const double* v, int64_t kv_heads, int64_t head_dim,
                     double scale, double* out) {
  const int64_t group = q_heads / kv_heads;
  std::vector<double> p;
  for (int64_t r = 0; r < t; ++r) {
    const int64_t nkeys = first_pos + r + 1;
    p.assign(nkeys, 0.0);
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t kvh = h / group;
      const double* qr = q + (r * q_heads + h) * head_dim;
      double mx = -1e300;
      for (int64_t j = 0; j < nkeys; ++j) {
        double s = 0;
        for (int64_t d = 0; d < head_dim; ++d) s += qr[d] * k[(j * kv_heads + kvh) * head_dim + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      double total = 0;
      for (int64_t j = 0; j < nkeys; ++j) total += (p[j] = std::exp(p[j] - mx));
      double* o = out + (r * q_heads + h) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < nkeys; ++j) acc += p[j] * v[(j * kv_heads + kvh) * head_dim + d];
        o[d] = acc / total;
      }
    }
  }
}

void SamplingProbabilities(std::span<const float> logits, const SamplingParams& params,
                           double* probs) {
  const size_t n = logits.size();
  std::fill(probs, probs + n, 0.0);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  if (params.temperature <= 0.0f || params.top_k == 1) {
    probs[order[0]] = 1.0;
    return;
  }
  size_t keep = n;
  if (params.top_k > 0) keep = std::min(keep, static_cast<size_t>(params.top_k));
  std::vector<double> w(keep);
  for (size_t i = 0; i < keep; ++i)
    w[i] =
        std::exp((static_cast<double>(logits[order[i]]) - logits[order[0]]) / params.temperature);
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  if (params.top_p < 1.0f) {
    double cum = 0;
    size_t m = 0;
    while (m < keep) {
      cum += w[m] / total;
      ++m;
      if (cum >= params.top_p) break;
    }
    keep = m;
    total = std::accumulate(w.begin(), w.begin() + keep, 0.0);
  }
  for (size_t i = 0; i < keep; ++i) probs[order[i]] = w[i] / total;
}

}  // namespace prfaas::kernels::cpu::ref
