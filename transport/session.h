// Protocol engine shared by every backend (internal to transport/).
//
// Backends only move frames. SenderCore turns Begin/Append/Commit/Abort into frames, enforces the
// ticket budget and the send window, and resolves sessions from the receiver's ACK/ABORT replies.
// RxCore validates and reassembles incoming frames into bundles and delivers them on commit.
//
// Contract with a backend (sender side): every frame the FrameSink accepts (Enqueue returned OK)
// is reported back exactly once through SenderCore::OnFrameDone, written or dropped. After
// FrameSink::Fail, the sink drops everything still queued and completes in-flight writes quickly
// (by closing its connections), so waits on borrowed memory always end.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "transport/telemetry.h"
#include "transport/transport.h"
#include "transport/wire.h"

namespace prfaas::transport::internal {

class TxBundle;
class StagingRing;

struct OutFrame {
  std::vector<std::byte> head;         // frame header (+ DATA desc), or a whole control frame
  std::span<const std::byte> payload;  // borrowed caller memory or a staging slot (DATA only)
  std::shared_ptr<const void> keep;    // a staging slot, released when the frame is destroyed
  uint64_t ticket = 0;
  std::shared_ptr<TxBundle> owner;  // told when the frame is written or dropped; may be null
  size_t size() const { return head.size() + payload.size(); }
};

// The outgoing frames of one stream connection (a TCP socket, a UCX endpoint). Any thread pushes;
// the connection's own executor (its strand, the UCX progress thread) pops and writes. Push says
// when the queue went from idle to busy, so that exactly one drain gets scheduled; a Pop that
// finds nothing makes it idle again. Once closed, nothing is queued or popped and Push says why.
class SendQueue {
 public:
  struct Item {
    OutFrame frame;
    bool close_after = false;  // close the connection once this frame is written
  };
  // Appends. *start: the queue was idle, the caller must schedule a drain. Once closed:
  // Unavailable("<what> closed: <reason>").
  Status Push(OutFrame f, bool close_after, const std::string& what, bool* start);
  // The next frame; nullopt when empty or closed (the queue is idle from then on).
  std::optional<Item> Pop();
  // Removes the frames of `ticket` that belong to a bundle (control frames stay), for
  // FrameSink::Purge; the caller reports them as not sent.
  std::vector<OutFrame> TakeTicket(uint64_t ticket);
  // Closes with `reason` and returns the frames never popped; *first says whether this call
  // closed it (later calls change nothing and return nothing).
  std::deque<Item> Close(std::string reason, bool* first);
  bool closed() const;
  std::string reason() const;

 private:
  mutable std::mutex mu_;
  std::deque<Item> items_;
  bool busy_ = false;
  bool closed_ = false;
  std::string reason_;
};

// Kernel-level numbers a backend can report (TCP_INFO and friends).
struct KernelStats {
  uint32_t connections = 0;
  uint64_t unacked_bytes = 0;
  double rtt_seconds = 0;
  uint64_t retransmits = 0;
};

class FrameSink {
 public:
  virtual ~FrameSink() = default;
  virtual int stripes() const = 0;
  // Queues a frame on one stripe without blocking. An error means the frame was not taken.
  virtual Status Enqueue(int stripe, OutFrame frame) = 0;
  // Drops the not-yet-started frames of a ticket (reported through OnFrameDone as dropped).
  virtual void Purge(uint64_t ticket) = 0;
  // Tears the link down; idempotent.
  virtual void Fail(const Status& reason) = 0;
  virtual KernelStats SampleKernel() { return {}; }
};

// The FrameSink of a stream backend: one connection per stripe. Conn provides
// Status Enqueue(OutFrame), Purge(ticket), Close(Status), closed() and
// AddKernelStats(KernelStats&) (what the kernel knows about a live connection; may be nothing).
template <typename Conn>
class StripedLink : public FrameSink {
 public:
  explicit StripedLink(std::vector<std::shared_ptr<Conn>> conns) : conns_(std::move(conns)) {}
  int stripes() const override { return static_cast<int>(conns_.size()); }
  Status Enqueue(int stripe, OutFrame f) override { return conns_[stripe]->Enqueue(std::move(f)); }
  void Purge(uint64_t ticket) override {
    for (auto& c : conns_) c->Purge(ticket);
  }
  void Fail(const Status& reason) override {
    for (auto& c : conns_) c->Close(reason);
  }
  KernelStats SampleKernel() override {
    KernelStats k;
    for (auto& c : conns_) {
      if (c->closed()) continue;
      ++k.connections;
      c->AddKernelStats(k);
    }
    return k;
  }

 private:
  std::vector<std::shared_ptr<Conn>> conns_;
};

class SenderCore : public std::enable_shared_from_this<SenderCore> {
 public:
  SenderCore(CommonOptions options, std::string peer);
  ~SenderCore();

  void AttachSink(std::shared_ptr<FrameSink> sink);  // once, before Begin
  void Close(const Status& reason);                  // fails the link, drops the sink

  Result<std::unique_ptr<OutboundBundle>> Begin(const BundleHeader& header, const Ticket& ticket);
  LinkStats Stats() const;
  // The pinned staging ring for device memory, made on first use (CUDA builds).
  Result<std::shared_ptr<StagingRing>> Staging();

  // Backend callbacks.
  void OnFrameDone(const OutFrame& frame, bool written);
  void OnControl(const wire::FrameHeader& h, std::span<const std::byte> body);
  void OnLinkFailed(const Status& reason);

 private:
  friend class TxBundle;
  // Waits for window space (control frames skip the window), then enqueues.
  Status Send(int stripe, OutFrame frame, bool control);
  void Unregister(uint64_t ticket, bool committed);
  std::shared_ptr<FrameSink> sink() const;
  void Tick();

  const CommonOptions options_;
  const std::string peer_;
  PeerMetrics metrics_;

  mutable std::mutex mu_;
  std::condition_variable window_cv_;
  std::shared_ptr<FrameSink> sink_;
  Status link_status_;
  std::map<uint64_t, std::weak_ptr<TxBundle>> bundles_;
  uint64_t pending_bytes_ = 0;  // enqueued, not yet reported done
  std::chrono::steady_clock::time_point last_progress_;
  uint64_t bytes_sent_ = 0;
  uint64_t committed_ = 0, aborted_ = 0;
  int next_stripe_ = 0;
  // Telemetry, updated by the ticker.
  double goodput_ewma_ = 0;
  uint64_t last_sample_bytes_ = 0;
  KernelStats kernel_;
  uint64_t retrans_reported_ = 0;

  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stopping_ = false;
  std::thread ticker_;

  std::mutex staging_mu_;
  std::shared_ptr<StagingRing> staging_;
};

// The Sender of a stream backend: the protocol core plus the thread(s) that run the connections
// (Runner has Stop(), which lets pending work finish and joins). Closing fails the link (the
// connections close on their own threads), then stops those threads.
template <typename Runner>
class StreamSender : public Sender {
 public:
  StreamSender(std::unique_ptr<Runner> runner, std::shared_ptr<SenderCore> core)
      : runner_(std::move(runner)), core_(std::move(core)) {}
  ~StreamSender() override { Close(); }
  Result<std::unique_ptr<OutboundBundle>> Begin(const BundleHeader& h, const Ticket& t) override {
    return core_->Begin(h, t);
  }
  LinkStats Stats() const override { return core_->Stats(); }
  void Close() override {
    core_->Close(Cancelled("sender closed"));
    runner_->Stop();
  }

 private:
  std::unique_ptr<Runner> runner_;
  std::shared_ptr<SenderCore> core_;
};

// A connection (or in-process peer) the receiver can answer on.
class ReplyPath {
 public:
  virtual ~ReplyPath() = default;
  // Sends a whole control frame; with close_after, the path closes once it is written.
  virtual void SendControl(std::vector<std::byte> frame, bool close_after) = 0;
};

// Where the payload of one DATA chunk goes: dst inside buf, or nowhere (discard) when dst==null.
struct ChunkTarget {
  std::shared_ptr<std::byte[]> buf;
  std::byte* dst = nullptr;
};

class RxCore : public std::enable_shared_from_this<RxCore> {
 public:
  RxCore(CommonOptions options, ReceiverCallbacks callbacks, std::string endpoint);
  ~RxCore();

  Ticket IssueTicket(const TicketSpec& spec);
  void Cancel(uint64_t ticket, std::string reason);
  ReceiverStats Stats() const;
  void Shutdown();  // aborts every open ticket (UNAVAILABLE), stops the ticker

  // Backend entry points. A non-OK return means the connection is unusable and must be closed.
  Status OnControl(const std::shared_ptr<ReplyPath>& from, const wire::FrameHeader& h,
                   std::span<const std::byte> body);
  ChunkTarget BeginChunk(const std::shared_ptr<ReplyPath>& from, uint64_t ticket,
                         const wire::DataDesc& d);
  void EndChunk(uint64_t ticket, const wire::DataDesc& d, ChunkTarget target);
  // A frame with a version this side does not speak: aborts the ticket, answers, closes.
  void OnUnknownVersion(const std::shared_ptr<ReplyPath>& from, const wire::FrameHeader& h);
  // The connection died (reset, EOF mid-session, truncated frame): aborts tickets it carried.
  void OnConnectionLost(const ReplyPath* from, const Status& reason);

 private:
  struct RxChunk {
    uint64_t len = 0;
    uint32_t crc = 0;  // CRC-32C of the chunk, set when it has landed
  };
  struct RxSegment {
    SegmentInfo info;
    uint16_t seg_in_layer = 0;
    uint32_t crc = 0;
    uint64_t length = 0;
    std::shared_ptr<std::byte[]> buf;
    uint64_t received = 0;
    // offset -> every chunk begun; overlaps are rejected, so received == length means every
    // byte was written (buffers are reused: stale bytes must never survive).
    std::map<uint64_t, RxChunk> chunks;
    bool verified = false;
  };
  struct RxTicket {
    TicketSpec spec;
    std::chrono::steady_clock::time_point last_activity;
    bool open_seen = false;
    BundleHeader header;
    std::map<uint32_t, RxSegment> segments;
    uint64_t reserved = 0;
    std::vector<bool> commits;  // per stripe
    std::optional<wire::CommitBody> commit;
    std::vector<std::weak_ptr<ReplyPath>> paths;
    std::set<const ReplyPath*> path_ids;
    std::map<uint32_t, uint32_t> layer_done;  // layer -> verified segments
    std::set<uint32_t> layers_reported;
    int chunks_in_progress = 0;
  };
  struct Pending;  // callbacks and replies to run after the lock is released

  void Touch(RxTicket& t, const std::shared_ptr<ReplyPath>& from);
  // Aborts under the lock; returns the work to do after unlocking.
  void AbortLocked(uint64_t id, wire::AbortCode code, const std::string& reason, bool tell_peer,
                   Pending& out);
  void MaybeFinishLocked(uint64_t id, Pending& out);
  void Run(Pending& p);
  void Tick();

  const CommonOptions options_;
  const ReceiverCallbacks callbacks_;
  const std::string endpoint_;
  ReceiverMetrics metrics_;

  mutable std::mutex mu_;
  std::map<uint64_t, RxTicket> tickets_;
  std::map<uint64_t, wire::AbortCode> finished_;  // recent tombstones: late frames are ignored
  std::vector<uint64_t> finished_order_;
  uint64_t next_ticket_;
  uint64_t buffered_ = 0, received_ = 0, committed_ = 0, aborted_ = 0;
  bool shut_ = false;

  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace prfaas::transport::internal
