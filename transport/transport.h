// KV transport: moves a prefill's KV cache and recurrent state ("a bundle") to a decode worker.
//
// The transport knows nothing about models. A bundle is a header (ticket, model fingerprint,
// per-layer layout and dtypes, block size, token range [token_begin, token_end)) plus segments of
// bytes tagged (layer, kind, block range). The wire format is in docs/wire-format.md.
//
// Flow:
//   1. The decode side owns a Receiver and issues a Ticket (id + byte budget + the prefix it
//      already holds). The ticket travels to the prefill side out of band (router / gRPC).
//   2. The prefill side holds a Sender per peer, calls Begin(header, ticket), then Append() one
//      segment per finished layer (layer-wise pipelining: Append returns as soon as the segment is
//      queued, while earlier segments are still on the wire), then Commit().
//   3. The receiver buffers segments (never more than the ticket's budget), verifies every
//      segment's CRC-32C, and hands the whole bundle to ReceiverCallbacks::on_commit only once the
//      sender committed and everything checked out. Nothing is delivered on any failure.
//   4. Any failure (sender Abort, receiver Cancel, checksum, truncation, unknown version, model
//      fingerprint mismatch, budget overrun, connection reset, peer death, idle timeout) ends the
//      session on both sides: buffers are freed, on_abort gets the reason on the receiver, and
//      Append/Commit return it on the sender. Nothing waits forever: every wait has a timeout.
//
// Backends (one file each): tcp.cpp (Boost.Asio, N striped connections per peer, optional mutual
// TLS), inproc.cpp (same process; tests and the colocated mode), ucx.cpp (UCP; PRFAAS_UCX builds).
// All backends share the protocol engine in session.cpp, so they behave identically.
//
// Thread safety: Sender, Receiver and OutboundBundle methods may be called from any thread. A
// single OutboundBundle must be driven by one thread at a time. Receiver callbacks run on a
// transport thread: keep them short and do not block in them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::metrics {
class Registry;
}

namespace prfaas::transport {

inline constexpr uint16_t kProtocolVersion = 1;

enum class SegmentKind : uint8_t { kAttnKv = 1, kConvState = 2, kSsmState = 3 };
enum class LayerKind : uint8_t { kFullAttention = 1, kLinearAttention = 2 };
enum class DType : uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3, kFp8E4M3 = 4, kFp8E5M2 = 5, kI8 = 6 };
// Where a send buffer lives. kDevice (CUDA device memory) is staged through a ring of pinned
// host buffers in CUDA builds (PRFAAS_CUDA) and rejected with UNIMPLEMENTED elsewhere. Receivers
// always deliver host memory.
enum class MemoryKind : uint8_t { kHost = 0, kDevice = 1 };

const char* SegmentKindName(SegmentKind k);

struct LayerDesc {
  LayerKind kind = LayerKind::kFullAttention;
  DType kv_dtype = DType::kBF16;    // attn_kv segments
  DType state_dtype = DType::kF32;  // conv_state / ssm_state segments
  friend bool operator==(const LayerDesc&, const LayerDesc&) = default;
};

struct BundleHeader {
  uint64_t ticket_id = 0;
  std::string request_id;          // for logs; at most 255 bytes
  uint64_t model_fingerprint = 0;  // must equal the ticket's
  std::vector<LayerDesc> layers;   // index = layer number; at most 65535 layers
  uint32_t block_size_tokens = 0;
  uint64_t token_begin = 0;  // = the prefix the receiver already holds (ticket.skip_tokens)
  uint64_t token_end = 0;    // exclusive; token_end >= token_begin
  friend bool operator==(const BundleHeader&, const BundleHeader&) = default;
};

struct SegmentInfo {
  uint32_t layer = 0;
  SegmentKind kind = SegmentKind::kAttnKv;
  uint32_t block_begin = 0;  // block range [block_begin, block_end) this segment covers
  uint32_t block_end = 0;
  bool last_of_layer = false;  // set on a layer's final segment: enables per-layer progress
  friend bool operator==(const SegmentInfo&, const SegmentInfo&) = default;
};

// Borrowed bytes to send. The memory must stay valid and unchanged until the bundle's Commit()
// or Abort() returns (the transport sends straight from it, without copying).
struct ConstBuffer {
  const void* data = nullptr;
  size_t size = 0;
  MemoryKind memory = MemoryKind::kHost;
};

// A received segment: owned bytes (crc already verified).
struct Segment {
  SegmentInfo info;
  uint32_t crc32c = 0;
  uint64_t size = 0;
  std::shared_ptr<std::byte[]> data;
  std::span<const std::byte> bytes() const { return {data.get(), static_cast<size_t>(size)}; }
};

// A complete, committed bundle; segments in the order the sender appended them.
struct Bundle {
  BundleHeader header;
  std::vector<Segment> segments;
  uint64_t total_bytes = 0;
};

struct TicketSpec {
  uint64_t budget_bytes = 0;       // the sender may send at most this many payload bytes
  uint64_t model_fingerprint = 0;  // the bundle's fingerprint must match
  uint64_t skip_tokens = 0;        // prefix the receiver already holds; header.token_begin
  std::chrono::milliseconds idle_timeout{10000};  // abort when no frame arrives for this long
};

// What the sender needs to know about a ticket (serialize these three fields to pass it on).
struct Ticket {
  uint64_t id = 0;
  uint64_t budget_bytes = 0;
  uint64_t skip_tokens = 0;
};

struct ReceiverCallbacks {
  std::function<void(Bundle&&)> on_commit;                                 // required
  std::function<void(uint64_t ticket, const Status& reason)> on_abort;     // optional
  std::function<void(uint64_t ticket, uint32_t layer)> on_layer_complete;  // optional; progress
};

// Per-peer link telemetry (what the worker forwards to the router).
struct LinkStats {
  std::string peer;                // "host:port" or inproc name
  uint32_t connections = 0;        // live connections
  double goodput_bytes_per_s = 0;  // EWMA of payload bytes/s over busy sampling intervals
  uint64_t bytes_in_flight = 0;    // handed to the OS, not yet acknowledged by the peer
  uint64_t queued_bytes = 0;       // appended, not yet handed to the OS
  double rtt_seconds = 0;          // smoothed RTT (TCP_INFO), max over connections
  uint64_t retransmits = 0;        // TCP_INFO total retransmitted segments, summed
  uint64_t bytes_sent = 0;         // payload bytes written, cumulative
  uint64_t bundles_committed = 0;
  uint64_t bundles_aborted = 0;
  uint64_t active_bundles = 0;  // begun, not yet committed or aborted
  bool healthy = true;          // false once the link failed; make a new Sender
};

struct ReceiverStats {
  uint64_t tickets_open = 0;
  uint64_t buffered_bytes = 0;  // bytes held for uncommitted tickets
  uint64_t bytes_received = 0;
  uint64_t bundles_committed = 0;
  uint64_t bundles_aborted = 0;
};

// One bundle being sent. Destroying it without Commit() aborts it.
class OutboundBundle {
 public:
  virtual ~OutboundBundle() = default;
  // Queues one segment and returns; blocks only while the link's queued bytes exceed the
  // sender's window (backpressure). Fails when the bundle would exceed the ticket's budget or the
  // session already failed (the error is the failure reason).
  virtual Status Append(const SegmentInfo& info, ConstBuffer data) = 0;
  // Sends the commit and waits until the receiver confirms delivery or the session fails.
  virtual Status Commit() = 0;
  // Ends the session; the receiver drops everything. Idempotent; no-op after a successful Commit.
  virtual void Abort(std::string reason) = 0;
};

// A link to one receiver peer.
class Sender {
 public:
  virtual ~Sender() = default;
  virtual Result<std::unique_ptr<OutboundBundle>> Begin(const BundleHeader& header,
                                                        const Ticket& ticket) = 0;
  virtual LinkStats Stats() const = 0;
  // Closes the link; open bundles fail with CANCELLED.
  virtual void Close() = 0;
};

class Receiver {
 public:
  virtual ~Receiver() = default;
  virtual Ticket IssueTicket(const TicketSpec& spec) = 0;
  // Cancels a ticket: buffers are freed, the sender is told, on_abort fires (CANCELLED).
  virtual void Cancel(uint64_t ticket_id, std::string reason) = 0;
  // Where senders connect: "127.0.0.1:40123" for tcp, the name for inproc.
  virtual std::string address() const = 0;
  virtual ReceiverStats Stats() const = 0;
  // Stops accepting, aborts open tickets (UNAVAILABLE), joins transport threads.
  virtual void Shutdown() = 0;
};

// Knobs shared by all backends.
struct CommonOptions {
  std::chrono::milliseconds idle_timeout{10000};    // sender: no write progress / no commit ack
  std::chrono::milliseconds commit_timeout{60000};  // sender: max wait in Commit()
  uint64_t max_queued_bytes = 64ull << 20;          // sender window: Append blocks above this
  size_t chunk_bytes = 1u << 20;          // segments are cut into chunks of this size (striping)
  metrics::Registry* registry = nullptr;  // where Prometheus metrics go; null = DefaultRegistry()
  std::string peer_label;                 // metrics label; default: the peer address
  std::string peer_cluster = "unknown";   // metrics label: the cluster the peer belongs to
  int staging_slots = 16;  // CUDA builds: pinned staging buffers of chunk_bytes for device memory
};

// Receive buffers of 2 MiB and up come from one process-wide pool of huge-page blocks. Blocks the
// consumer releases stay cached up to this many bytes (default 256 MiB) so later bundles reuse
// them; above it they go back to the OS and the next bundle pays for fresh zeroed pages (about as
// much CPU as receiving the bytes). Size it to the bytes a receiver holds at once, e.g. one large
// bundle. Lowering it frees idle blocks at once. Thread-safe.
void SetReceiveBufferPoolBytes(uint64_t bytes);
uint64_t ReceiveBufferPoolCachedBytes();  // idle bytes the pool holds now

struct TlsOptions {
  std::string cert_file;  // PEM certificate chain of this side
  std::string key_file;   // PEM private key
  std::string ca_file;    // PEM CA(s) the peer's certificate must chain to (mutual auth)
};

struct TcpOptions {
  CommonOptions common;
  int connections = 4;   // sender: parallel connections per peer (1..64)
  int sndbuf_bytes = 0;  // SO_SNDBUF; 0 = kernel default (autotuning)
  int rcvbuf_bytes = 0;  // SO_RCVBUF; 0 = kernel default
  int io_threads = 1;    // threads running the Asio event loop
  std::optional<TlsOptions> tls;
  std::chrono::milliseconds connect_timeout{5000};
};

// TCP backend. Listen on host:port (port 0 picks a free one; see Receiver::address()).
Result<std::unique_ptr<Receiver>> ListenTcp(const std::string& host, uint16_t port,
                                            const TcpOptions& options, ReceiverCallbacks callbacks);
Result<std::unique_ptr<Sender>> ConnectTcp(const std::string& host, uint16_t port,
                                           const TcpOptions& options);

// In-process backend: receivers register under a process-wide name.
Result<std::unique_ptr<Receiver>> ListenInproc(const std::string& name,
                                               const CommonOptions& options,
                                               ReceiverCallbacks callbacks);
Result<std::unique_ptr<Sender>> ConnectInproc(const std::string& name,
                                              const CommonOptions& options);

}  // namespace prfaas::transport
