// Wire format of the KV transport (docs/wire-format.md is the normative description).
//
// Every message is a frame: a fixed 20-byte header followed by body_len bytes of body. All
// integers are little-endian. The header layout is frozen across protocol versions, so a peer can
// always read the version and ticket of a frame it does not understand and reject it cleanly.
// This file only encodes and decodes; session.cpp owns the state machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "transport/transport.h"

namespace prfaas::transport::wire {

inline constexpr uint32_t kMagic = 0x54564B50;  // bytes "PKVT"
inline constexpr size_t kFrameHeaderSize = 20;
inline constexpr size_t kDataDescSize = 40;
inline constexpr size_t kCommitBodySize = 16;
inline constexpr size_t kAckBodySize = 8;
inline constexpr uint32_t kMaxControlBody = 1u << 20;  // OPEN / ABORT / COMMIT / ACK
inline constexpr uint32_t kMaxDataBody = (64u << 20) + kDataDescSize;

enum class FrameType : uint8_t { kOpen = 1, kData = 2, kCommit = 3, kAbort = 4, kAck = 5 };

// Carried in ABORT frames; each maps onto one StatusCode.
enum class AbortCode : uint16_t {
  kSenderAbort = 1,      // CANCELLED
  kReceiverCancel = 2,   // CANCELLED
  kChecksum = 3,         // DATA_LOSS
  kTruncated = 4,        // DATA_LOSS
  kUnknownVersion = 5,   // FAILED_PRECONDITION
  kFingerprint = 6,      // FAILED_PRECONDITION
  kBudget = 7,           // RESOURCE_EXHAUSTED
  kProtocol = 8,         // INTERNAL (malformed frame, bad layout, inconsistent segment)
  kIdleTimeout = 9,      // DEADLINE_EXCEEDED
  kUnknownTicket = 10,   // NOT_FOUND
  kConnectionLost = 11,  // UNAVAILABLE
  kShutdown = 12,        // UNAVAILABLE
};

StatusCode AbortCodeToStatus(AbortCode code);
AbortCode StatusToAbortCode(const Status& s);  // best effort inverse, for local failures

struct FrameHeader {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  FrameType type = FrameType::kOpen;
  uint8_t flags = 0;
  uint64_t ticket = 0;
  uint32_t body_len = 0;
};

struct DataDesc {
  uint32_t seg_index = 0;
  SegmentInfo info;
  uint16_t seg_in_layer = 0;  // ordinal of this segment within its layer (per-layer progress)
  uint32_t seg_crc = 0;
  uint64_t seg_length = 0;
  uint64_t chunk_offset = 0;
  uint32_t chunk_len = 0;  // not encoded: body_len - kDataDescSize
};

struct CommitBody {
  uint16_t stripe = 0;       // which connection this commit travelled on
  uint16_t num_stripes = 1;  // how many commits the receiver must see
  uint32_t num_segments = 0;
  uint64_t total_bytes = 0;
};

struct AbortBody {
  AbortCode code = AbortCode::kSenderAbort;
  std::string reason;  // at most 65535 bytes
};

void EncodeFrameHeader(const FrameHeader& h, std::byte* out);  // writes kFrameHeaderSize bytes
// Checks magic and the length limits of known types; does NOT check the version (the caller
// reports an unknown version against h.ticket).
Result<FrameHeader> DecodeFrameHeader(std::span<const std::byte> in);

std::vector<std::byte> EncodeOpen(const BundleHeader& h);
Result<BundleHeader> DecodeOpen(uint64_t ticket, std::span<const std::byte> body);

void EncodeDataDesc(const DataDesc& d, std::byte* out);  // writes kDataDescSize bytes
Result<DataDesc> DecodeDataDesc(std::span<const std::byte> in, uint32_t body_len);

std::vector<std::byte> EncodeCommit(const CommitBody& c);
Result<CommitBody> DecodeCommit(std::span<const std::byte> body);

std::vector<std::byte> EncodeAbort(const AbortBody& a);
Result<AbortBody> DecodeAbort(std::span<const std::byte> body);

std::vector<std::byte> EncodeAck(uint64_t total_bytes);
Result<uint64_t> DecodeAck(std::span<const std::byte> body);

// A whole control frame (header + body) ready to write.
std::vector<std::byte> ControlFrame(FrameType type, uint64_t ticket,
                                    const std::vector<std::byte>& body);

}  // namespace prfaas::transport::wire
