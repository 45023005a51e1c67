#include "serving/bundle_codec.h"

#include <cstring>

namespace prfaas::serving {
namespace {

transport::SegmentKind ToWire(engine::SegmentKind k) {
  switch (k) {
    case engine::SegmentKind::kAttnKv: return transport::SegmentKind::kAttnKv;
    case engine::SegmentKind::kConvState: return transport::SegmentKind::kConvState;
    case engine::SegmentKind::kSsmState: return transport::SegmentKind::kSsmState;
  }
  return transport::SegmentKind::kAttnKv;
}

Result<engine::SegmentKind> FromWire(transport::SegmentKind k) {
  switch (k) {
    case transport::SegmentKind::kAttnKv: return engine::SegmentKind::kAttnKv;
    case transport::SegmentKind::kConvState: return engine::SegmentKind::kConvState;
    case transport::SegmentKind::kSsmState: return engine::SegmentKind::kSsmState;
  }
  return InvalidArgument("unknown segment kind " + std::to_string(static_cast<int>(k)));
}

}  // namespace

std::vector<transport::LayerDesc> LayerLayout(const engine::ModelConfig& config) {
  std::vector<transport::LayerDesc> out;
  for (auto kind : config.layer_types) {
    transport::LayerDesc d;
    d.kind = kind == engine::LayerKind::kFullAttention ? transport::LayerKind::kFullAttention
                                                       : transport::LayerKind::kLinearAttention;
    d.kv_dtype = transport::DType::kF32;
    d.state_dtype = transport::DType::kF32;
    out.push_back(d);
  }
  return out;
}

uint64_t BundleBytes(const engine::ModelConfig& config, int64_t skip, int64_t n) {
  return static_cast<uint64_t>(config.KvBytesPerToken(4) * (n - skip) +
                               config.StateBytesPerSequence(4, 4));
}

OutgoingBundle DescribeExport(const engine::ModelConfig& config, const engine::SequenceExport& exp,
                              uint64_t ticket_id, const std::string& request_id, int64_t skip,
                              uint32_t block_size) {
  OutgoingBundle out;
  out.header.ticket_id = ticket_id;
  out.header.request_id = request_id.substr(0, 255);
  out.header.model_fingerprint = exp.model_fingerprint;
  out.header.layers = LayerLayout(config);
  out.header.block_size_tokens = block_size;
  out.header.token_begin = static_cast<uint64_t>(skip);
  out.header.token_end = static_cast<uint64_t>(exp.num_tokens);
  for (const auto& seg : exp.segments) {
    transport::SegmentInfo info;
    info.layer = static_cast<uint32_t>(seg.desc.layer);
    info.kind = ToWire(seg.desc.kind);
    if (seg.desc.kind == engine::SegmentKind::kAttnKv) {
      info.block_begin = static_cast<uint32_t>(seg.desc.token_begin / block_size);
      info.block_end = static_cast<uint32_t>((seg.desc.token_end + block_size - 1) / block_size);
    }
    // Every layer exports its segments together, so each segment closes a (layer, kind); GDN
    // layers have two kinds, the SSM state comes last.
    info.last_of_layer = seg.desc.kind != engine::SegmentKind::kConvState;
    out.infos.push_back(info);
  }
  return out;
}

Result<engine::SequenceExport> ToExport(const engine::ModelConfig& config,
                                        const transport::Bundle& bundle) {
  engine::SequenceExport exp;
  exp.model_fingerprint = bundle.header.model_fingerprint;
  exp.num_tokens = static_cast<int64_t>(bundle.header.token_end);
  const int64_t begin = static_cast<int64_t>(bundle.header.token_begin);
  const int64_t end = exp.num_tokens;
  if (bundle.header.layers.size() != config.layer_types.size()) {
    return InvalidArgument("bundle has " + std::to_string(bundle.header.layers.size()) +
                           " layers, model has " + std::to_string(config.layer_types.size()));
  }
  for (const auto& seg : bundle.segments) {
    if (seg.info.layer >= config.layer_types.size()) {
      return InvalidArgument("bundle segment for layer " + std::to_string(seg.info.layer) +
                             " beyond the model's " + std::to_string(config.layer_types.size()));
    }
    PRFAAS_ASSIGN_OR_RETURN(engine::SegmentKind kind, FromWire(seg.info.kind));
    engine::Segment out;
    out.desc.layer = seg.info.layer;
    out.desc.kind = kind;
    bool full = config.layer_types[seg.info.layer] == engine::LayerKind::kFullAttention;
    if (kind == engine::SegmentKind::kAttnKv) {
      if (!full)
        return InvalidArgument("attention KV for linear layer " + std::to_string(seg.info.layer));
      out.desc.token_begin = begin;
      out.desc.token_end = end;
      out.desc.shape = {2, end - begin, config.num_kv_heads, config.head_dim};
    } else {
      if (full)
        return InvalidArgument("GDN state for attention layer " + std::to_string(seg.info.layer));
      out.desc.token_begin = out.desc.token_end = end;
      if (kind == engine::SegmentKind::kConvState) {
        out.desc.shape = {config.linear_conv_kernel_dim - 1, config.conv_dim()};
      } else {
        out.desc.shape = {config.linear_num_value_heads, config.linear_key_head_dim,
                          config.linear_value_head_dim};
      }
    }
    int64_t elems = 1;
    for (auto d : out.desc.shape) elems *= d;
    if (static_cast<uint64_t>(elems) * 4 != seg.size) {
      return DataLoss("layer " + std::to_string(seg.info.layer) + " " +
                      transport::SegmentKindName(seg.info.kind) + " segment has " +
                      std::to_string(seg.size) + " bytes, expected " + std::to_string(elems * 4));
    }
    out.bytes.resize(seg.size);
    std::memcpy(out.bytes.data(), seg.data.get(), seg.size);
    exp.segments.push_back(std::move(out));
  }
  return exp;
}

}  // namespace prfaas::serving
