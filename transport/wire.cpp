#include "transport/wire.h"

#include <bit>
#include <cstring>

namespace prfaas::transport {

const char* SegmentKindName(SegmentKind k) {
  switch (k) {
    case SegmentKind::kAttnKv: return "attn_kv";
    case SegmentKind::kConvState: return "conv_state";
    case SegmentKind::kSsmState: return "ssm_state";
  }
  return "unknown";
}

}  // namespace prfaas::transport

namespace prfaas::transport::wire {
namespace {

static_assert(std::endian::native == std::endian::little, "wire code assumes a little-endian host");

template <typename T>
void Put(std::byte* out, size_t off, T v) {
  std::memcpy(out + off, &v, sizeof(T));
}
template <typename T>
T Get(const std::byte* in, size_t off) {
  T v;
  std::memcpy(&v, in + off, sizeof(T));
  return v;
}

// Appends little-endian fields to a growing body.
class Writer {
 public:
  template <typename T>
  void Add(T v) {
    size_t off = buf_.size();
    buf_.resize(off + sizeof(T));
    Put(buf_.data(), off, v);
  }
  void AddBytes(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  std::vector<std::byte> Take() { return std::move(buf_); }

 private:
  std::vector<std::byte> buf_;
};

// Reads fields with bounds checks; after any overrun ok() is false.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  template <typename T>
  T Next() {
    if (pos_ + sizeof(T) > in_.size()) {
      ok_ = false;
      return T{};
    }
    T v = Get<T>(in_.data(), pos_);
    pos_ += sizeof(T);
    return v;
  }
  std::string NextString(size_t n) {
    if (pos_ + n > in_.size()) {
      ok_ = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

bool ValidSegmentKind(uint8_t k) {
  return k >= 1 && k <= 3;
}
bool ValidLayerKind(uint8_t k) {
  return k >= 1 && k <= 2;
}
bool ValidDType(uint8_t d) {
  return d >= 1 && d <= 6;
}

}  // namespace

StatusCode AbortCodeToStatus(AbortCode code) {
  switch (code) {
    case AbortCode::kSenderAbort:
    case AbortCode::kReceiverCancel: return StatusCode::kCancelled;
    case AbortCode::kChecksum:
    case AbortCode::kTruncated: return StatusCode::kDataLoss;
    case AbortCode::kUnknownVersion:
    case AbortCode::kFingerprint: return StatusCode::kFailedPrecondition;
    case AbortCode::kBudget: return StatusCode::kResourceExhausted;
    case AbortCode::kProtocol: return StatusCode::kInternal;
    case AbortCode::kIdleTimeout: return StatusCode::kDeadlineExceeded;
    case AbortCode::kUnknownTicket: return StatusCode::kNotFound;
    case AbortCode::kConnectionLost:
    case AbortCode::kShutdown: return StatusCode::kUnavailable;
  }
  return StatusCode::kUnknown;
}

AbortCode StatusToAbortCode(const Status& s) {
  switch (s.code()) {
    case StatusCode::kDataLoss: return AbortCode::kChecksum;
    case StatusCode::kFailedPrecondition: return AbortCode::kFingerprint;
    case StatusCode::kResourceExhausted: return AbortCode::kBudget;
    case StatusCode::kDeadlineExceeded: return AbortCode::kIdleTimeout;
    case StatusCode::kNotFound: return AbortCode::kUnknownTicket;
    case StatusCode::kUnavailable: return AbortCode::kConnectionLost;
    case StatusCode::kCancelled: return AbortCode::kSenderAbort;
    default: return AbortCode::kProtocol;
  }
}

void EncodeFrameHeader(const FrameHeader& h, std::byte* out) {
  Put(out, 0, h.magic);
  Put(out, 4, h.version);
  Put(out, 6, static_cast<uint8_t>(h.type));
  Put(out, 7, h.flags);
  Put(out, 8, h.ticket);
  Put(out, 16, h.body_len);
}

Result<FrameHeader> DecodeFrameHeader(std::span<const std::byte> in) {
  if (in.size() < kFrameHeaderSize) return DataLoss("truncated frame header");
  FrameHeader h;
  h.magic = Get<uint32_t>(in.data(), 0);
  h.version = Get<uint16_t>(in.data(), 4);
  h.type = static_cast<FrameType>(Get<uint8_t>(in.data(), 6));
  h.flags = Get<uint8_t>(in.data(), 7);
  h.ticket = Get<uint64_t>(in.data(), 8);
  h.body_len = Get<uint32_t>(in.data(), 16);
  if (h.magic != kMagic) return Internal("bad frame magic (not a prfaas KV transport peer?)");
  if (h.version != kProtocolVersion) return h;  // caller rejects with the ticket in hand
  switch (h.type) {
    case FrameType::kData:
      if (h.body_len < kDataDescSize || h.body_len > kMaxDataBody)
        return Internal("DATA frame body length out of range: " + std::to_string(h.body_len));
      break;
    case FrameType::kOpen:
    case FrameType::kCommit:
    case FrameType::kAbort:
    case FrameType::kAck:
      if (h.body_len > kMaxControlBody)
        return Internal("control frame body too long: " + std::to_string(h.body_len));
      break;
    default: return Internal("unknown frame type " + std::to_string(static_cast<int>(h.type)));
  }
  return h;
}

std::vector<std::byte> EncodeOpen(const BundleHeader& h) {
  Writer w;
  auto id_len = static_cast<uint8_t>(std::min<size_t>(h.request_id.size(), 255));
  w.Add<uint8_t>(id_len);
  w.AddBytes(h.request_id.data(), id_len);
  w.Add<uint64_t>(h.model_fingerprint);
  w.Add<uint32_t>(h.block_size_tokens);
  w.Add<uint64_t>(h.token_begin);
  w.Add<uint64_t>(h.token_end);
  w.Add<uint16_t>(static_cast<uint16_t>(h.layers.size()));
  for (const auto& l : h.layers) {
    w.Add<uint8_t>(static_cast<uint8_t>(l.kind));
    w.Add<uint8_t>(static_cast<uint8_t>(l.kv_dtype));
    w.Add<uint8_t>(static_cast<uint8_t>(l.state_dtype));
  }
  return w.Take();
}

Result<BundleHeader> DecodeOpen(uint64_t ticket, std::span<const std::byte> body) {
  Reader r(body);
  BundleHeader h;
  h.ticket_id = ticket;
  auto id_len = r.Next<uint8_t>();
  h.request_id = r.NextString(id_len);
  h.model_fingerprint = r.Next<uint64_t>();
  h.block_size_tokens = r.Next<uint32_t>();
  h.token_begin = r.Next<uint64_t>();
  h.token_end = r.Next<uint64_t>();
  auto n = r.Next<uint16_t>();
  if (!r.ok()) return Internal("truncated OPEN body");
  h.layers.resize(n);
  for (auto& l : h.layers) {
    auto kind = r.Next<uint8_t>();
    auto kv = r.Next<uint8_t>();
    auto st = r.Next<uint8_t>();
    if (!r.ok()) return Internal("truncated OPEN layer table");
    if (!ValidLayerKind(kind) || !ValidDType(kv) || !ValidDType(st))
      return Internal("OPEN layer table has an unknown layer kind or dtype");
    l = {static_cast<LayerKind>(kind), static_cast<DType>(kv), static_cast<DType>(st)};
  }
  if (!r.done()) return Internal("trailing bytes after OPEN body");
  if (h.token_end < h.token_begin) return Internal("OPEN token range is reversed");
  return h;
}

void EncodeDataDesc(const DataDesc& d, std::byte* out) {
  Put(out, 0, d.seg_index);
  Put(out, 4, d.info.layer);
  Put(out, 8, static_cast<uint8_t>(d.info.kind));
  Put(out, 9, static_cast<uint8_t>(d.info.last_of_layer ? 1 : 0));
  Put(out, 10, d.seg_in_layer);
  Put(out, 12, d.info.block_begin);
  Put(out, 16, d.info.block_end);
  Put(out, 20, d.seg_crc);
  Put(out, 24, d.seg_length);
  Put(out, 32, d.chunk_offset);
}

Result<DataDesc> DecodeDataDesc(std::span<const std::byte> in, uint32_t body_len) {
  if (in.size() < kDataDescSize || body_len < kDataDescSize) return DataLoss("truncated DATA desc");
  DataDesc d;
  d.seg_index = Get<uint32_t>(in.data(), 0);
  d.info.layer = Get<uint32_t>(in.data(), 4);
  auto kind = Get<uint8_t>(in.data(), 8);
  auto flags = Get<uint8_t>(in.data(), 9);
  d.seg_in_layer = Get<uint16_t>(in.data(), 10);
  d.info.block_begin = Get<uint32_t>(in.data(), 12);
  d.info.block_end = Get<uint32_t>(in.data(), 16);
  d.seg_crc = Get<uint32_t>(in.data(), 20);
  d.seg_length = Get<uint64_t>(in.data(), 24);
  d.chunk_offset = Get<uint64_t>(in.data(), 32);
  d.chunk_len = body_len - static_cast<uint32_t>(kDataDescSize);
  if (!ValidSegmentKind(kind)) return Internal("DATA frame has unknown segment kind");
  if (flags & ~1u) return Internal("DATA frame has unknown flags");
  d.info.kind = static_cast<SegmentKind>(kind);
  d.info.last_of_layer = flags & 1u;
  if (d.info.block_end < d.info.block_begin) return Internal("DATA block range is reversed");
  if (d.chunk_offset > d.seg_length || d.chunk_len > d.seg_length - d.chunk_offset)
    return Internal("DATA chunk lies outside its segment");
  return d;
}

std::vector<std::byte> EncodeCommit(const CommitBody& c) {
  Writer w;
  w.Add(c.stripe);
  w.Add(c.num_stripes);
  w.Add(c.num_segments);
  w.Add(c.total_bytes);
  return w.Take();
}

Result<CommitBody> DecodeCommit(std::span<const std::byte> body) {
  Reader r(body);
  CommitBody c;
  c.stripe = r.Next<uint16_t>();
  c.num_stripes = r.Next<uint16_t>();
  c.num_segments = r.Next<uint32_t>();
  c.total_bytes = r.Next<uint64_t>();
  if (!r.ok() || !r.done()) return Internal("malformed COMMIT body");
  if (c.num_stripes == 0 || c.stripe >= c.num_stripes)
    return Internal("COMMIT stripe out of range");
  return c;
}

std::vector<std::byte> EncodeAbort(const AbortBody& a) {
  Writer w;
  auto n = static_cast<uint16_t>(std::min<size_t>(a.reason.size(), 65535));
  w.Add(static_cast<uint16_t>(a.code));
  w.Add(n);
  w.AddBytes(a.reason.data(), n);
  return w.Take();
}

Result<AbortBody> DecodeAbort(std::span<const std::byte> body) {
  Reader r(body);
  AbortBody a;
  auto code = r.Next<uint16_t>();
  auto n = r.Next<uint16_t>();
  a.reason = r.NextString(n);
  if (!r.ok() || !r.done()) return Internal("malformed ABORT body");
  if (code < 1 || code > 12) code = static_cast<uint16_t>(AbortCode::kProtocol);
  a.code = static_cast<AbortCode>(code);
  return a;
}

std::vector<std::byte> EncodeAck(uint64_t total_bytes) {
  Writer w;
  w.Add(total_bytes);
  return w.Take();
}

Result<uint64_t> DecodeAck(std::span<const std::byte> body) {
  Reader r(body);
  auto v = r.Next<uint64_t>();
  if (!r.ok() || !r.done()) return Internal("malformed ACK body");
  return v;
}

std::vector<std::byte> ControlFrame(FrameType type, uint64_t ticket,
                                    const std::vector<std::byte>& body) {
  std::vector<std::byte> out(kFrameHeaderSize + body.size());
  FrameHeader h;
  h.type = type;
  h.ticket = ticket;
  h.body_len = static_cast<uint32_t>(body.size());
  EncodeFrameHeader(h, out.data());
  if (!body.empty()) std::memcpy(out.data() + kFrameHeaderSize, body.data(), body.size());
  return out;
}

}  // namespace prfaas::transport::wire
