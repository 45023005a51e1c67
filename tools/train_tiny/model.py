"""A tiny Qwen3-Next-style hybrid language model in plain PyTorch (the trainer's reference model).

Same math as the C++ engine and HF transformers' Qwen3-Next (see the model contract and
shared/reference/hybrid-models-and-kernels.md sections 1 and 3):
  * decoder layers: x += mixer(input_layernorm(x)); x += mlp(post_attention_layernorm(x))
  * mixer: Gated DeltaNet ("linear_attention") except every full_attention_interval-th layer,
    which is gated GQA ("full_attention") with partial RoPE and q/k norms
  * all RMSNorms zero-centred (y = x/rms * (1 + w)) except the GDN output norm (plain weight,
    then * silu(z))
  * SwiGLU MLP, byte-level vocabulary (ids 0..255 are bytes, 256.. special tokens)

Module and parameter names are the HF checkpoint names with the split (Qwen3.5-style) GDN
projections, so state_dict() is the checkpoint.

Two execution paths that must agree (selfcheck.py checks it):
  * parallel: whole sequence at once, GDN in the chunked WY form (training, prefill)
  * step: one token at a time with a recurrent state (GDN delta rule, attention KV cache)
"""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EOS_ID = 256            # <|endoftext|>
IM_START_ID = 257
IM_END_ID = 258
PAD_ID = 259


@dataclasses.dataclass
class Config:
    vocab_size: int = 260
    hidden_size: int = 256
    num_hidden_layers: int = 8
    full_attention_interval: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    partial_rotary_factor: float = 0.25
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    intermediate_size: int = 768
    linear_num_key_heads: int = 4
    linear_num_value_heads: int = 8
    linear_key_head_dim: int = 64
    linear_value_head_dim: int = 64
    linear_conv_kernel_dim: int = 4
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    dropout: float = 0.0            # residual dropout, training only (not exported)

    def layer_types(self):
        return ["full_attention" if (i + 1) % self.full_attention_interval == 0
                else "linear_attention" for i in range(self.num_hidden_layers)]

    def to_hf(self):
        """config.json contents (HF Qwen3-Next keys, per the model contract)."""
        return {
            "architectures": ["Qwen3NextForCausalLM"],
            "model_type": "qwen3_next",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "layer_types": self.layer_types(),
            "full_attention_interval": self.full_attention_interval,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "partial_rotary_factor": self.partial_rotary_factor,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "intermediate_size": self.intermediate_size,
            "linear_num_key_heads": self.linear_num_key_heads,
            "linear_num_value_heads": self.linear_num_value_heads,
            "linear_key_head_dim": self.linear_key_head_dim,
            "linear_value_head_dim": self.linear_value_head_dim,
            "linear_conv_kernel_dim": self.linear_conv_kernel_dim,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attn_output_gate": True,
            "attention_bias": False,
            "bos_token_id": EOS_ID,
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
            "torch_dtype": "bfloat16",
            "tokenizer": {"type": "bytes", "special_tokens": {
                "<|endoftext|>": EOS_ID, "<|im_start|>": IM_START_ID,
                "<|im_end|>": IM_END_ID, "<|pad|>": PAD_ID}},
        }

    @staticmethod
    def from_hf(d):
        fields = {f.name for f in dataclasses.fields(Config)}
        return Config(**{k: v for k, v in d.items() if k in fields})


class ZeroCentredRMSNorm(nn.Module):
    """y = x / rms(x) * (1 + w); weight starts at 0."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        xf = x.float() if x.dtype != torch.float64 else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.to(y.dtype))).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """GDN output norm: y = x / rms(x) * w * silu(z) with a plain weight (starts at 1)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, z):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight.to(y.dtype) * F.silu(z.to(y.dtype))


def l2norm(x, eps=1e-6):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def gdn_recurrent(q, k, v, g, beta, scale, state=None):
    """Delta rule, token by token. q,k: [B,T,H,dk] (L2-normed), v: [B,T,H,dv], g,beta: [B,T,H].
    State S: [B,H,dk,dv]. Returns o [B,T,H,dv], final S."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    S = q.new_zeros(B, H, dk, dv) if state is None else state
    outs = []
    for t in range(T):
        S = S * torch.exp(g[:, t])[:, :, None, None]
        kt = k[:, t]
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", S, kt))
        S = S + kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t] * scale))
    return torch.stack(outs, dim=1), S


def gdn_chunked(q, k, v, g, beta, scale, state=None, chunk=64):
    """Same as gdn_recurrent, in the chunkwise-parallel WY form (reference doc section 1.4)."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    pad = (-T) % chunk
    if pad:
        # Padded steps have k = v = 0, beta = 0, g = 0: they leave the state untouched.
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, 0, 0, pad)) for x in (g, beta))
    N = (T + pad) // chunk

    def split(x):  # [B,T,H,...] -> [B,H,N,C,...]
        x = x.transpose(1, 2)
        return x.reshape(B, H, N, chunk, *x.shape[3:])

    q, k, v, g, beta = split(q) * scale, split(k), split(v), split(g), split(beta)
    gam = g.cumsum(-1)                                           # [B,H,N,C]
    idx = torch.arange(chunk, device=q.device)
    incl = idx[:, None] >= idx[None, :]
    # exp(gam_i - gam_j) for j <= i; masked before exp so the upper triangle cannot overflow.
    decay = torch.exp((gam[..., :, None] - gam[..., None, :]).masked_fill(~incl, float("-inf")))
    strict = idx[:, None] > idx[None, :]
    A = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * decay).masked_fill(~strict, 0.0)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    Tinv = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    W = Tinv @ (k * (beta * torch.exp(gam))[..., None])          # [B,H,N,C,dk]
    U = Tinv @ (v * beta[..., None])                             # [B,H,N,C,dv]
    attn = (q @ k.transpose(-1, -2)) * decay                     # causal incl. diagonal
    qdec = q * torch.exp(gam)[..., None]
    kdec = k * torch.exp(gam[..., -1:] - gam)[..., None]

    S = q.new_zeros(B, H, dk, dv) if state is None else state
    outs = []
    for n in range(N):
        v_new = U[:, :, n] - W[:, :, n] @ S
        outs.append(qdec[:, :, n] @ S + attn[:, :, n] @ v_new)
        S = torch.exp(gam[:, :, n, -1])[..., None, None] * S + kdec[:, :, n].transpose(-1, -2) @ v_new
    o = torch.stack(outs, dim=2).reshape(B, H, N * chunk, dv)[:, :, :T]
    return o.transpose(1, 2), S


class GatedDeltaNet(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.hk, self.hv = c.linear_num_key_heads, c.linear_num_value_heads
        self.dk, self.dv = c.linear_key_head_dim, c.linear_value_head_dim
        self.key_dim, self.value_dim = self.hk * self.dk, self.hv * self.dv
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.K = c.linear_conv_kernel_dim
        h = c.hidden_size
        self.in_proj_qkv = nn.Linear(h, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(h, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(h, self.hv, bias=False)
        self.in_proj_a = nn.Linear(h, self.hv, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.K, groups=self.conv_dim, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(self.hv).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(torch.ones(self.hv))
        self.norm = GatedRMSNorm(self.dv, c.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, h, bias=False)

    def forward(self, x, state=None, recurrent=False):
        """x: [B,T,h]. state: (conv_state [B,conv_dim,K-1], S [B,hv,dk,dv]) or None (fresh)."""
        B, T, _ = x.shape
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        mixed = self.in_proj_qkv(x).transpose(1, 2)                    # [B,conv_dim,T]
        z = self.in_proj_z(x).view(B, T, self.hv, self.dv)
        b, a = self.in_proj_b(x), self.in_proj_a(x)
        ctx = mixed.new_zeros(B, self.conv_dim, self.K - 1) if state is None else state[0].to(mixed.dtype)
        xin = torch.cat([ctx, mixed], dim=2)
        conv = F.silu(F.conv1d(xin, self.conv1d.weight.to(xin.dtype), groups=self.conv_dim))
        q, k, v = conv.transpose(1, 2).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        rep = self.hv // self.hk      # value head j reads key head j // rep
        q = l2norm(q.reshape(B, T, self.hk, self.dk).to(cdt)).repeat_interleave(rep, dim=2)
        k = l2norm(k.reshape(B, T, self.hk, self.dk).to(cdt)).repeat_interleave(rep, dim=2)
        v = v.reshape(B, T, self.hv, self.dv).to(cdt)
        beta = torch.sigmoid(b.to(cdt))
        g = -torch.exp(self.A_log.to(cdt)) * F.softplus(a.to(cdt) + self.dt_bias.to(cdt))
        S0 = None if state is None else state[1]
        fn = gdn_recurrent if recurrent else gdn_chunked
        with torch.autocast(x.device.type, enabled=False):   # the recurrence stays in fp32
            o, S = fn(q, k, v, g, beta, self.dk ** -0.5, S0)
        o = self.norm(o, z).reshape(B, T, self.value_dim).to(x.dtype)
        return self.out_proj(o), (xin[:, :, -(self.K - 1):], S)


def rope(x, pos, rot_dim, theta):
    """Rotate-half RoPE on the first rot_dim dims of x [B,T,H,d]; pos: [T] absolute positions."""
    inv_freq = 1.0 / theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float64, device=x.device) / rot_dim)
    freqs = pos.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(x.dtype)[None, :, None, :], emb.sin().to(x.dtype)[None, :, None, :]
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    x1, x2 = xr[..., : rot_dim // 2], xr[..., rot_dim // 2:]
    xr = xr * cos + torch.cat([-x2, x1], dim=-1) * sin
    return torch.cat([xr, xp], dim=-1)


class GatedAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.nh, self.nkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.rot = int(self.hd * c.partial_rotary_factor)
        h = c.hidden_size
        self.q_proj = nn.Linear(h, self.nh * self.hd * 2, bias=False)   # per head [q | gate]
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)
        self.q_norm = ZeroCentredRMSNorm(self.hd, c.rms_norm_eps)
        self.k_norm = ZeroCentredRMSNorm(self.hd, c.rms_norm_eps)

    def forward(self, x, state=None, recurrent=False):
        """state: (k_cache [B,S,nkv,hd], v_cache) or None. Positions continue after the cache."""
        B, T, _ = x.shape
        q, gate = self.q_proj(x).view(B, T, self.nh, 2 * self.hd).split(self.hd, dim=-1)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd)
        past = 0 if state is None else state[0].shape[1]
        pos = torch.arange(past, past + T, device=x.device)
        q = rope(self.q_norm(q), pos, self.rot, self.c.rope_theta)
        k = rope(self.k_norm(k), pos, self.rot, self.c.rope_theta)
        if state is not None:
            k, v = torch.cat([state[0], k], dim=1), torch.cat([state[1], v], dim=1)
        rep = self.nh // self.nkv     # query head j reads kv head j // rep
        qh = q.transpose(1, 2)
        kh = k.repeat_interleave(rep, dim=2).transpose(1, 2)
        vh = v.repeat_interleave(rep, dim=2).transpose(1, 2)
        if x.is_cuda and state is None:
            o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
        else:
            cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
            s = (qh.to(cdt) @ kh.to(cdt).transpose(-1, -2)) * self.hd ** -0.5     # [B,nh,T,past+T]
            allowed = torch.arange(past + T, device=x.device)[None, :] <= pos[:, None]
            s = s.masked_fill(~allowed, float("-inf"))
            o = (torch.softmax(s, dim=-1) @ vh.to(cdt)).to(x.dtype)
        o = o.transpose(1, 2).reshape(B, T, self.nh * self.hd) * torch.sigmoid(gate.reshape(B, T, -1))
        return self.o_proj(o), (k, v)


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: Config, layer_type):
        super().__init__()
        self.layer_type = layer_type
        if layer_type == "linear_attention":
            self.linear_attn = GatedDeltaNet(c)
        else:
            self.self_attn = GatedAttention(c)
        self.mlp = MLP(c)
        self.input_layernorm = ZeroCentredRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = ZeroCentredRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, state=None, recurrent=False):
        mixer = self.linear_attn if self.layer_type == "linear_attention" else self.self_attn
        y, state = mixer(self.input_layernorm(x), state, recurrent)
        x = x + self.drop(y)
        x = x + self.drop(self.mlp(self.post_attention_layernorm(x)))
        return x, state


class Backbone(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c, t) for t in c.layer_types()])
        self.norm = ZeroCentredRMSNorm(c.hidden_size, c.rms_norm_eps)


class TinyHybridLM(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.model = Backbone(c)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init)
        # Scale the residual-branch outputs down with depth (GPT-2 style) for a stable start.
        for n, p in self.named_parameters():
            if n.endswith(("out_proj.weight", "o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, states=None, recurrent=False):
        """ids: [B,T] int64. states: per-layer list from a previous call (None: fresh sequence).
        recurrent=True runs GDN token by token (the decode path). Returns logits [B,T,V], states."""
        x = self.model.embed_tokens(ids)
        new_states = []
        for i, layer in enumerate(self.model.layers):
            x, s = layer(x, None if states is None else states[i], recurrent)
            new_states.append(s)
        x = self.model.norm(x)
        w = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, w.to(x.dtype)), new_states
