// Converts between the engine's export of a sequence (engine::SequenceExport) and the
// transport's model-agnostic bundle (transport::BundleHeader + segments).
//
// The engine exports float32 segments with full shapes; the transport carries only layer, kind,
// block range and bytes. The receiver rebuilds shapes from the model config and the bundle's token
// range, so nothing model-specific travels in the transport's framing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "transport/transport.h"

namespace prfaas::serving {

// Per-layer layout of `config` as the transport describes it (all float32 today).
std::vector<transport::LayerDesc> LayerLayout(const engine::ModelConfig& config);

// Payload bytes an export of tokens [skip, n) plus the state takes on the wire (the ticket budget).
uint64_t BundleBytes(const engine::ModelConfig& config, int64_t skip, int64_t n);

struct OutgoingBundle {
  transport::BundleHeader header;
  std::vector<transport::SegmentInfo> infos;  // parallel to export.segments
};

// Describes `exp` (tokens [skip, exp.num_tokens)) for the transport. Segment bytes stay in `exp`.
OutgoingBundle DescribeExport(const engine::ModelConfig& config, const engine::SequenceExport& exp,
                              uint64_t ticket_id, const std::string& request_id, int64_t skip,
                              uint32_t block_size);

// Rebuilds an engine export from a committed bundle; validates kinds, layers and sizes against the
// model config (DATA_LOSS / INVALID_ARGUMENT with the offending layer on mismatch).
Result<engine::SequenceExport> ToExport(const engine::ModelConfig& config,
                                        const transport::Bundle& bundle);

}  // namespace prfaas::serving
