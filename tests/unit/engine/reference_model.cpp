// Float64 reference forward. Deliberately a straight transcription of the model equations.
#include "reference_model.h"

#include <cmath>

#include "kernels/cpu/ref.h"

namespace prfaas::engine::testing {
namespace ref = kernels::cpu::ref;
namespace {
std::vector<double> D(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}
double Softplus(double x) {
  return x > 20 ? x : std::log1p(std::exp(x));
}
}  // namespace

std::vector<double> ReferenceForward(const ModelConfig& c, const ModelWeights& w,
                                     const std::vector<int32_t>& tokens) {
  const int64_t t = static_cast<int64_t>(tokens.size()), h = c.hidden_size;
  std::vector<double> x(t * h), xn(t * h), y(t * h);
  ref::Embedding(D(w.embed).data(), c.vocab_size, h, tokens, x.data());
  for (const auto& lw : w.layers) {
    ref::RmsNorm(x.data(), t, h, D(lw.input_norm).data(), c.rms_norm_eps, xn.data());
    if (lw.kind == LayerKind::kFullAttention) {
      const int64_t d = c.head_dim, hq = c.num_attention_heads, hkv = c.num_kv_heads;
      const int64_t width = hq * 2 * d + 2 * hkv * d;
      std::vector<double> qkv(t * width), q(t * hq * d), gate(t * hq * d), k(t * hkv * d),
          v(t * hkv * d);
      ref::Linear(xn.data(), t, h, D(lw.attn.qkv_proj).data(), width, qkv.data());
      std::vector<int32_t> pos(t);
      for (int64_t i = 0; i < t; ++i) {
        pos[i] = static_cast<int32_t>(i);
        for (int64_t hh = 0; hh < hq; ++hh)
          for (int64_t e = 0; e < d; ++e) {
            q[(i * hq + hh) * d + e] = qkv[i * width + hh * 2 * d + e];
            gate[(i * hq + hh) * d + e] = qkv[i * width + hh * 2 * d + d + e];
          }
        for (int64_t e = 0; e < hkv * d; ++e) {
          k[i * hkv * d + e] = qkv[i * width + hq * 2 * d + e];
          v[i * hkv * d + e] = qkv[i * width + hq * 2 * d + hkv * d + e];
        }
      }
      ref::RmsNorm(q.data(), t * hq, d, D(lw.attn.q_norm).data(), c.rms_norm_eps, q.data());
      ref::RmsNorm(k.data(), t * hkv, d, D(lw.attn.k_norm).data(), c.rms_norm_eps, k.data());
      ref::ApplyRope(q.data(), t, hq * d, hq, d, c.rotary_dim(), pos.data(),
                     static_cast<float>(c.rope_theta));
      ref::ApplyRope(k.data(), t, hkv * d, hkv, d, c.rotary_dim(), pos.data(),
                     static_cast<float>(c.rope_theta));
      std::vector<double> o(t * hq * d);
      ref::CausalAttention(q.data(), t, hq, 0, k.data(), v.data(), hkv, d,
                           1.0 / std::sqrt(static_cast<double>(d)), o.data());
      ref::SigmoidGateMul(o.data(), gate.data(), t * hq * d, o.data());
      ref::Linear(o.data(), t, hq * d, D(lw.attn.o_proj).data(), h, y.data());
    } else {
      const int64_t cd = c.conv_dim(), kd = c.linear_key_dim(), vd = c.linear_value_dim();
      const int64_t hv = c.linear_num_value_heads, dv = c.linear_value_head_dim;
      const int64_t width = cd + vd + 2 * hv;
      std::vector<double> proj(t * width), mixed(t * cd), conv(t * cd), z(t * vd), g(t * hv),
          beta(t * hv);
      ref::Linear(xn.data(), t, h, D(lw.gdn.in_proj).data(), width, proj.data());
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t e = 0; e < cd; ++e) mixed[i * cd + e] = proj[i * width + e];
        for (int64_t e = 0; e < vd; ++e) z[i * vd + e] = proj[i * width + cd + e];
        for (int64_t j = 0; j < hv; ++j) {
          beta[i * hv + j] = 1.0 / (1.0 + std::exp(-proj[i * width + cd + vd + j]));
          g[i * hv + j] = -std::exp(static_cast<double>(lw.gdn.a_log[j])) *
                          Softplus(proj[i * width + cd + vd + hv + j] + lw.gdn.dt_bias[j]);
        }
      }
      std::vector<double> conv_state((c.linear_conv_kernel_dim - 1) * cd, 0.0);
      ref::CausalConv1d(mixed.data(), t, cd, D(lw.gdn.conv1d).data(), c.linear_conv_kernel_dim,
                        conv_state.data(), conv.data());
      std::vector<double> q(t * kd), k(t * kd), v(t * vd), o(t * vd);
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t e = 0; e < kd; ++e) {
          q[i * kd + e] = conv[i * cd + e];
          k[i * kd + e] = conv[i * cd + kd + e];
        }
        for (int64_t e = 0; e < vd; ++e) v[i * vd + e] = conv[i * cd + 2 * kd + e];
      }
      std::vector<double> state(hv * c.linear_key_head_dim * dv, 0.0);
      kernels::cpu::GdnShape shape{t, c.linear_num_key_heads, hv, c.linear_key_head_dim, dv};
      ref::GatedDeltaRuleRecurrent(shape, q.data(), k.data(), v.data(), g.data(), beta.data(),
                                   1.0 / std::sqrt(static_cast<double>(c.linear_key_head_dim)),
                                   state.data(), o.data());
      ref::GatedRmsNorm(o.data(), z.data(), t * hv, dv, D(lw.gdn.norm).data(), c.rms_norm_eps,
                        o.data());
      ref::Linear(o.data(), t, vd, D(lw.gdn.out_proj).data(), h, y.data());
    }
    for (int64_t i = 0; i < t * h; ++i) x[i] += y[i];
    ref::RmsNorm(x.data(), t, h, D(lw.post_norm).data(), c.rms_norm_eps, xn.data());
    const int64_t inter = c.intermediate_size;
    std::vector<double> gu(t * 2 * inter), act(t * inter);
    ref::Linear(xn.data(), t, h, D(lw.gate_up).data(), 2 * inter, gu.data());
    for (int64_t i = 0; i < t; ++i)
      ref::SwiGLU(&gu[i * 2 * inter], &gu[i * 2 * inter + inter], inter, &act[i * inter]);
    ref::Linear(act.data(), t, inter, D(lw.down).data(), h, y.data());
    for (int64_t i = 0; i < t * h; ++i) x[i] += y[i];
  }
  ref::RmsNorm(x.data(), t, h, D(w.final_norm).data(), c.rms_norm_eps, xn.data());
  std::vector<double> logits(t * c.vocab_size);
  ref::Linear(xn.data(), t, h, D(w.output_matrix()).data(), c.vocab_size, logits.data());
  return logits;
}

}  // namespace prfaas::engine::testing
