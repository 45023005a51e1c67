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

// The header of a bundle carrying tokens [skip, n) of a sequence plus its state at n.
transport::BundleHeader MakeBundleHeader(const engine::ModelConfig& config, uint64_t fingerprint,
                                         uint64_t ticket_id, const std::string& request_id,
                                         int64_t skip, int64_t n, uint32_t block_size);

// Describes one exported segment for the transport. A bundle may carry a layer's attention KV in
// several block-aligned pieces (streamed while prefill computes); `final_piece` marks the export
// that closes every layer (the last KV piece and the state).
transport::SegmentInfo DescribeSegment(const engine::Segment& segment, uint32_t block_size,
                                       bool final_piece);

// Rebuilds an engine export from a committed bundle; validates kinds, layers and sizes against the
// model config (DATA_LOSS / INVALID_ARGUMENT with the offending layer on mismatch). A layer's KV
// pieces must cover [token_begin, token_end) in order; they are joined into one segment.
Result<engine::SequenceExport> ToExport(const engine::ModelConfig& config,
                                        const transport::Bundle& bundle);

}  // namespace prfaas::serving
