// Paged causal GQA attention (prefill and decode share this kernel). See ops.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/ops.h"

namespace prfaas::kernels::cpu {

void PagedCausalAttention(const float* q, int64_t t, int64_t q_heads, int64_t first_pos,
                          const PagedKvView& kv, float scale, float* out) {
  constexpr int64_t kTile = 16;  // query rows sharing one pass over the keys
  const int64_t d = kv.head_dim;
  const int64_t bs = kv.block_size;
  const int64_t group = q_heads / kv.kv_heads;
  const int64_t q_stride = q_heads * d;
  const int64_t kv_stride = kv.kv_heads * d;
  const int64_t tiles = (t + kTile - 1) / kTile;
  const float neg_inf = -std::numeric_limits<float>::infinity();

#pragma omp parallel for collapse(2) \
    schedule(dynamic) if (t * (first_pos + t) * q_heads * d >= (int64_t{1} << 20))
  for (int64_t h = 0; h < q_heads; ++h) {
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t kvh = h / group;
      const int64_t r0 = tile * kTile;
      const int64_t rows = std::min(kTile, t - r0);
      const int64_t last_key = first_pos + r0 + rows - 1;  // inclusive
      const int64_t nblocks = last_key / bs + 1;
      std::vector<float> scores(kTile * bs);
      std::vector<float> acc(kTile * d, 0.0f);
      std::vector<float> run_max(kTile, neg_inf);
      std::vector<float> run_sum(kTile, 0.0f);
      const float* qt = q + r0 * q_stride + h * d;
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t key0 = b * bs;
        const int64_t nk = std::min(bs, last_key + 1 - key0);
        const float* kb = kv.k_blocks[b] + kvh * d;
        const float* vb = kv.v_blocks[b] + kvh * d;
        DotBlock(qt, q_stride, rows, kb, kv_stride, nk, d, scores.data(), bs);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = first_pos + r0 + r;
          const int64_t valid = std::min(nk, pos + 1 - key0);  // keys <= pos in this block
          if (valid <= 0) continue;  // fully masked: contributes exactly nothing
          float* s = scores.data() + r * bs;
          float m = run_max[r];
          for (int64_t j = 0; j < valid; ++j) {
            s[j] *= scale;
            m = std::max(m, s[j]);
          }
          const float corr = std::exp(run_max[r] - m);  // exp(-inf) = 0 on the first block
          float sum = 0.0f;
          for (int64_t j = 0; j < valid; ++j) {
            s[j] = std::exp(s[j] - m);
            sum += s[j];
          }
          run_sum[r] = run_sum[r] * corr + sum;
          run_max[r] = m;
          float* a = acc.data() + r * d;
          for (int64_t i = 0; i < d; ++i) a[i] *= corr;
          for (int64_t j = 0; j < valid; ++j) {
            const float p = s[j];
            const float* vj = vb + j * kv_stride;
            for (int64_t i = 0; i < d; ++i) a[i] += p * vj[i];
          }
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* o = out + (r0 + r) * q_stride + h * d;
        const float inv = 1.0f / run_sum[r];
        for (int64_t i = 0; i < d; ++i) o[i] = acc[r * d + i] * inv;
      }
    }
  }
}

}  // namespace prfaas::kernels::cpu
