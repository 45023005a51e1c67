#include "transport/session.h"

#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <utility>

#include "transport/crc32c.h"
#ifdef PRFAAS_HAVE_CUDA_STAGING
#include "transport/staging_cuda.h"
#endif

namespace prfaas::transport::internal {

using Clock = std::chrono::steady_clock;
using wire::AbortCode;
using wire::FrameType;

namespace {

constexpr auto kTickPeriod = std::chrono::milliseconds(100);
constexpr auto kWaitSlice = std::chrono::milliseconds(50);

const char* AbortCodeName(AbortCode c) {
  switch (c) {
    case AbortCode::kSenderAbort: return "sender_abort";
    case AbortCode::kReceiverCancel: return "receiver_cancel";
    case AbortCode::kChecksum: return "checksum";
    case AbortCode::kTruncated: return "truncated";
    case AbortCode::kUnknownVersion: return "unknown_version";
    case AbortCode::kFingerprint: return "fingerprint";
    case AbortCode::kBudget: return "budget";
    case AbortCode::kProtocol: return "protocol";
    case AbortCode::kIdleTimeout: return "idle_timeout";
    case AbortCode::kUnknownTicket: return "unknown_ticket";
    case AbortCode::kConnectionLost: return "connection_lost";
    case AbortCode::kShutdown: return "shutdown";
  }
  return "unknown";
}

// Receive buffers of 2 MiB and up come from a process-wide pool of 2 MiB-aligned blocks that
// ask for transparent huge pages. A fresh multi-MiB allocation is a new mmap the kernel zeroes
// and faults in page by page, which cost about as much CPU as receiving the bytes; a recycled
// block costs nothing. The consumer returns a block by dropping the Segment's shared_ptr.
class SegmentPool {
 public:
  static constexpr size_t kHuge = 2u << 20;

  static SegmentPool& Get() {
    static SegmentPool* pool = new SegmentPool;  // never destroyed: deleters may run at exit
    return *pool;
  }

  // Lowering the limit frees idle blocks above it at once.
  void SetLimit(uint64_t bytes) {
    std::vector<void*> drop;
    {
      std::lock_guard lk(mu_);
      limit_ = bytes;
      for (auto& [size, blocks] : free_) {
        while (cached_ > limit_ && !blocks.empty()) {
          drop.push_back(blocks.back());
          blocks.pop_back();
          cached_ -= size;
        }
      }
    }
    for (void* p : drop) std::free(p);
  }
  uint64_t cached() {
    std::lock_guard lk(mu_);
    return cached_;
  }

  std::shared_ptr<std::byte[]> Alloc(uint64_t n) {
    if (n < kHuge) return std::shared_ptr<std::byte[]>(new std::byte[std::max<uint64_t>(n, 1)]);
    const size_t rounded = (n + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    {
      std::lock_guard lk(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= rounded;
      }
    }
    if (!p) {
      p = std::aligned_alloc(kHuge, rounded);
      if (!p) throw std::bad_alloc();
      ::madvise(p, rounded, MADV_HUGEPAGE);
    }
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p),
                                        [this, rounded](std::byte* q) { Release(q, rounded); });
  }

 private:
  void Release(void* p, size_t rounded) {
    {
      std::lock_guard lk(mu_);
      if (cached_ + rounded <= limit_) {
        free_[rounded].push_back(p);
        cached_ += rounded;
        return;
      }
    }
    std::free(p);
  }

  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // rounded size -> idle blocks
  size_t cached_ = 0;
  size_t limit_ = 256u << 20;
};

std::shared_ptr<std::byte[]> AllocSegment(uint64_t n) {
  return SegmentPool::Get().Alloc(n);
}

std::vector<std::byte> AbortFrame(uint64_t ticket, AbortCode code, const std::string& reason) {
  return wire::ControlFrame(FrameType::kAbort, ticket, wire::EncodeAbort({code, reason}));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SendQueue

Status SendQueue::Push(OutFrame f, bool close_after, const std::string& what, bool* start) {
  std::lock_guard lk(mu_);
  *start = false;
  if (closed_) return Unavailable(what + " closed: " + reason_);
  items_.push_back({std::move(f), close_after});
  if (!busy_) busy_ = *start = true;
  return Status::Ok();
}

std::optional<SendQueue::Item> SendQueue::Pop() {
  std::lock_guard lk(mu_);
  if (closed_ || items_.empty()) {
    busy_ = false;
    return std::nullopt;
  }
  Item item = std::move(items_.front());
  items_.pop_front();
  return item;
}

std::vector<OutFrame> SendQueue::TakeTicket(uint64_t ticket) {
  std::lock_guard lk(mu_);
  std::vector<OutFrame> taken;
  for (auto it = items_.begin(); it != items_.end();) {
    if (it->frame.ticket == ticket && it->frame.owner) {
      taken.push_back(std::move(it->frame));
      it = items_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

std::deque<SendQueue::Item> SendQueue::Close(std::string reason, bool* first) {
  std::lock_guard lk(mu_);
  *first = !closed_;
  if (closed_) return {};
  closed_ = true;
  reason_ = std::move(reason);
  return std::exchange(items_, {});
}

bool SendQueue::closed() const {
  std::lock_guard lk(mu_);
  return closed_;
}

std::string SendQueue::reason() const {
  std::lock_guard lk(mu_);
  return reason_;
}

// ---------------------------------------------------------------------------------------------
// Sender side
// ---------------------------------------------------------------------------------------------

class TxBundle : public std::enable_shared_from_this<TxBundle> {
 public:
  TxBundle(std::shared_ptr<SenderCore> core, BundleHeader header, Ticket ticket)
      : core_(std::move(core)), header_(std::move(header)), ticket_(ticket), begun_(Clock::now()) {}

  uint64_t ticket() const { return ticket_.id; }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status status() const {
    std::lock_guard lk(mu_);
    return status_;
  }

  Status Append(const SegmentInfo& info, ConstBuffer data) {
#ifndef PRFAAS_HAVE_CUDA_STAGING
    if (data.memory != MemoryKind::kHost)
      return Unimplemented("device memory needs the CUDA staging ring (not built)");
#endif
    if (data.size > 0 && data.data == nullptr) return InvalidArgument("null segment data");
    if (info.block_end < info.block_begin) return InvalidArgument("reversed block range");
    wire::DataDesc d;
    {
      std::lock_guard lk(mu_);
      if (!status_.ok()) return status_;
      if (committing_ || finished_) return FailedPrecondition("bundle already committed");
      if (info.layer >= header_.layers.size())
        return InvalidArgument("segment layer " + std::to_string(info.layer) +
                               " outside the header's " + std::to_string(header_.layers.size()) +
                               " layers");
      if (data.size > ticket_.budget_bytes - appended_)
        return ResourceExhausted("segment of " + std::to_string(data.size) +
                                 " bytes exceeds the ticket budget (" +
                                 std::to_string(ticket_.budget_bytes - appended_) + " of " +
                                 std::to_string(ticket_.budget_bytes) + " bytes left)");
      appended_ += data.size;
      d.seg_index = segments_++;
      d.seg_in_layer = seg_in_layer_[info.layer]++;
    }
    d.info = info;
    d.seg_length = data.size;
    const auto* base = static_cast<const std::byte*>(data.data);
    if (data.memory == MemoryKind::kDevice) return AppendDevice(d, base);
    d.seg_crc = Crc32c(base, data.size);
    const size_t chunk = std::max<size_t>(core_->options_.chunk_bytes, 4096);
    size_t off = 0;
    do {
      const size_t n = std::min(chunk, data.size - off);
      PRFAAS_RETURN_IF_ERROR(SendChunk(d, off, {base + off, n}, nullptr));
      off += n;
    } while (off < data.size);
    return Status::Ok();
  }

  Status Commit() {
    bool failed;
    {
      std::lock_guard lk(mu_);
      if (finished_ && status_.ok()) return Status::Ok();
      if (committing_ && status_.ok()) return FailedPrecondition("Commit already in progress");
      failed = !status_.ok();
      committing_ = true;
    }
    if (failed) return FinishFailed();
    const int n = core_->sink() ? core_->sink()->stripes() : 1;
    for (int s = 0; s < n; ++s) {
      wire::CommitBody c{static_cast<uint16_t>(s), static_cast<uint16_t>(n), segments_, appended_};
      OutFrame f;
      f.head = wire::ControlFrame(FrameType::kCommit, ticket_.id, wire::EncodeCommit(c));
      if (!SendOwned(s, std::move(f), false).ok()) return FinishFailed();
    }
    const auto deadline = Clock::now() + core_->options_.commit_timeout;
    std::unique_lock lk(mu_);
    while (!acked_ && status_.ok()) {
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && !acked_ && status_.ok()) {
        SetFailed(DeadlineExceeded("no commit ACK from the receiver within " +
                                   std::to_string(core_->options_.commit_timeout.count()) + " ms"),
                  /*peer_knows=*/false);
      }
    }
    if (!status_.ok()) {
      lk.unlock();
      return FinishFailed();
    }
    finished_ = true;
    lk.unlock();
    WaitDrained();
    core_->metrics_.commit_latency.Observe(
        std::chrono::duration<double>(Clock::now() - begun_).count());
    core_->Unregister(ticket_.id, true);
    return Status::Ok();
  }

  void Abort(const std::string& reason) {
    {
      std::lock_guard lk(mu_);
      if (finished_) return;
      if (status_.ok()) SetFailed(Cancelled("aborted by sender: " + reason), false);
    }
    (void)FinishFailed();
  }

  // The session failed for a reason the peer already knows (its ABORT, or a dead link).
  void FailFromPeer(const Status& s) {
    std::lock_guard lk(mu_);
    SetFailed(s, true);
  }

  void OnAck() {
    std::lock_guard lk(mu_);
    if (status_.ok()) acked_ = true;
    cv_.notify_all();
  }

  void FrameDone() {
    std::lock_guard lk(mu_);
    --outstanding_;
    cv_.notify_all();
  }

 private:
  friend class SenderCore;

  void SetFailed(const Status& s, bool peer_knows) {  // mu_ held
    if (!status_.ok()) return;
    status_ = s;
    peer_knows_ = peer_knows;
    failed_.store(true, std::memory_order_release);
    cv_.notify_all();
  }

  // Queues one DATA frame: payload at offset `off` of the segment described by d.
  Status SendChunk(wire::DataDesc d, size_t off, std::span<const std::byte> payload,
                   std::shared_ptr<const void> keep) {
    d.chunk_offset = off;
    OutFrame f;
    f.head.resize(wire::kFrameHeaderSize + wire::kDataDescSize);
    wire::FrameHeader h;
    h.type = FrameType::kData;
    h.ticket = ticket_.id;
    h.body_len = static_cast<uint32_t>(wire::kDataDescSize + payload.size());
    wire::EncodeFrameHeader(h, f.head.data());
    wire::EncodeDataDesc(d, f.head.data() + wire::kFrameHeaderSize);
    f.payload = payload;
    f.keep = std::move(keep);
    return SendOwned(-1, std::move(f), false);
  }

  // Device memory: every chunk is copied into a pinned staging slot and sent from there. The
  // segment's CRC must be in every chunk's descriptor, so a segment that fits in the ring is
  // staged whole first; a larger one is streamed through the ring twice (once for the CRC, once
  // to send), which keeps pinned memory bounded at the cost of a second device-to-host copy.
  Status AppendDevice(wire::DataDesc d, const std::byte* src) {
#ifdef PRFAAS_HAVE_CUDA_STAGING
    PRFAAS_ASSIGN_OR_RETURN(auto ring, core_->Staging());
    const size_t piece = ring->slot_bytes();
    const auto wait = core_->options_.idle_timeout;
    const size_t size = d.seg_length;
    if (size <= ring->capacity()) {
      std::vector<std::shared_ptr<const std::byte>> staged;
      uint32_t crc = 0;
      for (size_t off = 0; off < size; off += piece) {
        const size_t n = std::min(piece, size - off);
        PRFAAS_ASSIGN_OR_RETURN(auto slot, ring->Stage(src + off, n, wait));
        crc = Crc32cExtend(crc, slot.get(), n);
        staged.push_back(std::move(slot));
      }
      d.seg_crc = crc;
      if (size == 0) return SendChunk(d, 0, {}, nullptr);
      for (size_t i = 0, off = 0; off < size; ++i, off += piece) {
        const size_t n = std::min(piece, size - off);
        auto data = staged[i].get();
        PRFAAS_RETURN_IF_ERROR(SendChunk(d, off, {data, n}, std::move(staged[i])));
      }
      return Status::Ok();
    }
    uint32_t crc = 0;
    for (size_t off = 0; off < size; off += piece) {
      const size_t n = std::min(piece, size - off);
      PRFAAS_ASSIGN_OR_RETURN(auto slot, ring->Stage(src + off, n, wait));
      crc = Crc32cExtend(crc, slot.get(), n);
    }
    d.seg_crc = crc;
    for (size_t off = 0; off < size; off += piece) {
      const size_t n = std::min(piece, size - off);
      PRFAAS_ASSIGN_OR_RETURN(auto slot, ring->Stage(src + off, n, wait));
      auto data = slot.get();
      PRFAAS_RETURN_IF_ERROR(SendChunk(d, off, {data, n}, std::move(slot)));
    }
    return Status::Ok();
#else
    (void)d;
    (void)src;
    return Unimplemented("device memory needs the CUDA staging ring (not built)");
#endif
  }

  Status SendOwned(int stripe, OutFrame f, bool control) {
    f.ticket = ticket_.id;
    f.owner = shared_from_this();
    {
      std::lock_guard lk(mu_);
      if (!status_.ok()) return status_;
      ++outstanding_;
    }
    Status st = core_->Send(stripe, std::move(f), control);
    if (!st.ok()) {
      std::lock_guard lk(mu_);
      --outstanding_;
      SetFailed(st, true);
      cv_.notify_all();
      return status_;
    }
    return st;
  }

  // Ends a failed session: drops queued frames, tells the receiver, waits until no frame still
  // points at the caller's memory. Returns the failure.
  Status FinishFailed() {
    bool tell;
    Status st;
    {
      std::lock_guard lk(mu_);
      if (finished_) return status_;
      finished_ = true;
      tell = !peer_knows_;
      st = status_;
    }
    if (auto sink = core_->sink()) sink->Purge(ticket_.id);
    if (tell) {
      OutFrame f;
      f.head = AbortFrame(ticket_.id, wire::StatusToAbortCode(st), st.message());
      f.ticket = ticket_.id;
      (void)core_->Send(0, std::move(f), true);
    }
    WaitDrained();
    core_->Unregister(ticket_.id, false);
    return st;
  }

  void WaitDrained() {
    std::unique_lock lk(mu_);
    if (cv_.wait_for(lk, core_->options_.idle_timeout, [&] { return outstanding_ == 0; })) return;
    lk.unlock();
    // Writes are stuck (peer not reading): tear the link down so they complete with an error.
    core_->OnLinkFailed(DeadlineExceeded("writes made no progress while draining a session"));
    lk.lock();
    cv_.wait(lk, [&] { return outstanding_ == 0; });
  }

  std::shared_ptr<SenderCore> core_;
  const BundleHeader header_;
  const Ticket ticket_;
  const Clock::time_point begun_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status status_;
  std::atomic<bool> failed_{false};
  bool peer_knows_ = false;
  bool committing_ = false;
  bool acked_ = false;
  bool finished_ = false;
  int outstanding_ = 0;
  uint64_t appended_ = 0;
  uint32_t segments_ = 0;
  std::map<uint32_t, uint16_t> seg_in_layer_;
};

namespace {

class BundleHandle : public OutboundBundle {
 public:
  explicit BundleHandle(std::shared_ptr<TxBundle> b) : b_(std::move(b)) {}
  ~BundleHandle() override { b_->Abort("bundle dropped without Commit"); }
  Status Append(const SegmentInfo& info, ConstBuffer data) override {
    return b_->Append(info, data);
  }
  Status Commit() override { return b_->Commit(); }
  void Abort(std::string reason) override { b_->Abort(reason); }

 private:
  std::shared_ptr<TxBundle> b_;
};

}  // namespace

SenderCore::SenderCore(CommonOptions options, std::string peer)
    : options_(std::move(options)),
      peer_(std::move(peer)),
      metrics_(RegistryOr(options_.registry),
               options_.peer_label.empty() ? peer_ : options_.peer_label,
               options_.peer_cluster.empty() ? "unknown" : options_.peer_cluster),
      last_progress_(Clock::now()) {
  ticker_ = std::thread([this] {
    std::unique_lock lk(tick_mu_);
    while (!tick_cv_.wait_for(lk, kTickPeriod, [&] { return stopping_; })) {
      lk.unlock();
      Tick();
      lk.lock();
    }
  });
}

SenderCore::~SenderCore() {
  {
    std::lock_guard lk(tick_mu_);
    stopping_ = true;
  }
  tick_cv_.notify_all();
  ticker_.join();
}

void SenderCore::AttachSink(std::shared_ptr<FrameSink> sink) {
  std::lock_guard lk(mu_);
  sink_ = std::move(sink);
}

std::shared_ptr<FrameSink> SenderCore::sink() const {
  std::lock_guard lk(mu_);
  return sink_;
}

void SenderCore::Close(const Status& reason) {
  OnLinkFailed(reason);
  std::shared_ptr<FrameSink> drop;
  {
    std::lock_guard lk(mu_);
    drop = std::move(sink_);
  }
}

Result<std::unique_ptr<OutboundBundle>> SenderCore::Begin(const BundleHeader& header,
                                                          const Ticket& ticket) {
  if (header.ticket_id != ticket.id)
    return InvalidArgument("header.ticket_id does not match the ticket");
  if (header.token_begin != ticket.skip_tokens)
    return InvalidArgument("header.token_begin must equal the ticket's skip_tokens (" +
                           std::to_string(ticket.skip_tokens) + ")");
  if (header.token_end < header.token_begin) return InvalidArgument("reversed token range");
  if (header.layers.size() > 65535) return InvalidArgument("too many layers");
  if (header.request_id.size() > 255) return InvalidArgument("request_id longer than 255 bytes");
  auto bundle = std::make_shared<TxBundle>(shared_from_this(), header, ticket);
  {
    std::lock_guard lk(mu_);
    if (!link_status_.ok()) return Unavailable("link is down: " + link_status_.message());
    auto it = bundles_.find(ticket.id);
    if (it != bundles_.end() && !it->second.expired())
      return AlreadyExists("ticket " + std::to_string(ticket.id) + " already has a bundle");
    bundles_[ticket.id] = bundle;
  }
  OutFrame open;
  open.head = wire::ControlFrame(FrameType::kOpen, ticket.id, wire::EncodeOpen(header));
  Status st = bundle->SendOwned(0, std::move(open), false);
  auto handle = std::make_unique<BundleHandle>(bundle);
  if (!st.ok()) return st;  // the handle's destructor cleans up
  return std::unique_ptr<OutboundBundle>(std::move(handle));
}

Status SenderCore::Send(int stripe, OutFrame frame, bool control) {
  const uint64_t size = frame.size();
  std::shared_ptr<FrameSink> sink;
  {
    std::unique_lock lk(mu_);
    while (true) {
      if (!link_status_.ok()) return Unavailable("link is down: " + link_status_.message());
      if (frame.owner && frame.owner->failed() && !control) return frame.owner->status();
      if (control || pending_bytes_ == 0 || pending_bytes_ + size <= options_.max_queued_bytes)
        break;
      if (Clock::now() - last_progress_ > options_.idle_timeout) {
        lk.unlock();
        Status st = DeadlineExceeded("link idle: no write progress for " +
                                     std::to_string(options_.idle_timeout.count()) + " ms");
        OnLinkFailed(st);
        return st;
      }
      window_cv_.wait_for(lk, kWaitSlice);
    }
    if (!sink_) return Unavailable("link closed");
    if (pending_bytes_ == 0) last_progress_ = Clock::now();
    pending_bytes_ += size;
    const int n = std::max(1, sink_->stripes());
    if (stripe < 0) stripe = next_stripe_++ % n;
    if (next_stripe_ >= n) next_stripe_ = 0;
    sink = sink_;
  }
  Status st = sink->Enqueue(stripe, std::move(frame));
  if (!st.ok()) {
    std::lock_guard lk(mu_);
    pending_bytes_ -= size;
  }
  return st;
}

void SenderCore::OnFrameDone(const OutFrame& frame, bool written) {
  {
    std::lock_guard lk(mu_);
    pending_bytes_ -= frame.size();
    last_progress_ = Clock::now();
    if (written) bytes_sent_ += frame.payload.size();
  }
  window_cv_.notify_all();
  if (written && !frame.payload.empty())
    metrics_.sent.Inc(static_cast<double>(frame.payload.size()));
  if (frame.owner) frame.owner->FrameDone();
}

void SenderCore::OnControl(const wire::FrameHeader& h, std::span<const std::byte> body) {
  std::shared_ptr<TxBundle> b;
  {
    std::lock_guard lk(mu_);
    auto it = bundles_.find(h.ticket);
    if (it != bundles_.end()) b = it->second.lock();
  }
  if (!b) return;  // late reply for a finished session
  if (h.type == FrameType::kAck) {
    b->OnAck();
  } else if (h.type == FrameType::kAbort) {
    auto a = wire::DecodeAbort(body);
    Status s = a.ok() ? Status(wire::AbortCodeToStatus(a->code), "receiver aborted: " + a->reason)
                      : Internal("receiver aborted with a malformed ABORT frame");
    b->FailFromPeer(s);
    if (auto sink = this->sink()) sink->Purge(h.ticket);
    window_cv_.notify_all();
  } else {
    spdlog::warn("transport: unexpected frame type {} from receiver {}", static_cast<int>(h.type),
                 peer_);
  }
}

void SenderCore::OnLinkFailed(const Status& reason) {
  std::vector<std::shared_ptr<TxBundle>> victims;
  std::shared_ptr<FrameSink> sink;
  {
    std::lock_guard lk(mu_);
    if (!link_status_.ok()) return;
    link_status_ = reason.ok() ? Unavailable("link failed") : reason;
    for (auto& [id, w] : bundles_)
      if (auto b = w.lock()) victims.push_back(std::move(b));
    sink = sink_;
  }
  spdlog::warn("transport: link to {} failed: {}", peer_, reason.ToString());
  window_cv_.notify_all();
  // Bundles learn the link's reason before the connections go down: otherwise a reply the
  // receiver sends about the teardown (e.g. connection_lost on a surviving stripe) could land
  // first and replace the reason.
  for (auto& b : victims)
    b->FailFromPeer(Status(reason.code(), "link to " + peer_ + " failed: " + reason.message()));
  if (sink) sink->Fail(reason);
}

void SenderCore::Unregister(uint64_t ticket, bool committed) {
  {
    std::lock_guard lk(mu_);
    bundles_.erase(ticket);
    (committed ? committed_ : aborted_)++;
  }
  (committed ? metrics_.committed : metrics_.aborted).Inc();
}

void SenderCore::Tick() {
  auto sink = this->sink();
  KernelStats k = sink ? sink->SampleKernel() : KernelStats{};
  std::lock_guard lk(mu_);
  const double dt = std::chrono::duration<double>(kTickPeriod).count();
  const uint64_t delta = bytes_sent_ - last_sample_bytes_;
  last_sample_bytes_ = bytes_sent_;
  if (delta > 0) {
    const double rate = static_cast<double>(delta) / dt;
    goodput_ewma_ = goodput_ewma_ == 0 ? rate : 0.7 * goodput_ewma_ + 0.3 * rate;
  }
  kernel_ = k;
  metrics_.goodput.Set(goodput_ewma_);
  metrics_.queued.Set(static_cast<double>(pending_bytes_));
  metrics_.in_flight.Set(static_cast<double>(k.unacked_bytes));
  metrics_.rtt.Set(k.rtt_seconds);
  metrics_.connections.Set(k.connections);
  if (k.retransmits > retrans_reported_) {
    metrics_.retransmits.Inc(static_cast<double>(k.retransmits - retrans_reported_));
    retrans_reported_ = k.retransmits;
  }
}

Result<std::shared_ptr<StagingRing>> SenderCore::Staging() {
#ifdef PRFAAS_HAVE_CUDA_STAGING
  std::lock_guard lk(staging_mu_);
  if (!staging_) {
    const size_t slot = std::max<size_t>(options_.chunk_bytes, 4096);
    PRFAAS_ASSIGN_OR_RETURN(staging_,
                            StagingRing::Create(slot, std::max(2, options_.staging_slots)));
  }
  return staging_;
#else
  return Unimplemented("device memory needs the CUDA staging ring (not built)");
#endif
}

LinkStats SenderCore::Stats() const {
  std::lock_guard lk(mu_);
  LinkStats s;
  s.peer = peer_;
  s.connections = kernel_.connections;
  s.goodput_bytes_per_s = goodput_ewma_;
  s.bytes_in_flight = kernel_.unacked_bytes;
  s.queued_bytes = pending_bytes_;
  s.rtt_seconds = kernel_.rtt_seconds;
  s.retransmits = kernel_.retransmits;
  s.bytes_sent = bytes_sent_;
  s.bundles_committed = committed_;
  s.bundles_aborted = aborted_;
  for (const auto& [id, b] : bundles_) s.active_bundles += b.expired() ? 0 : 1;
  s.healthy = link_status_.ok();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Receiver side
// ---------------------------------------------------------------------------------------------

struct RxCore::Pending {
  struct Reply {
    std::shared_ptr<ReplyPath> path;
    std::vector<std::byte> frame;
    bool close_after = false;
  };
  std::vector<Reply> replies;
  std::vector<std::pair<uint64_t, Status>> aborts;
  std::vector<std::pair<uint64_t, uint32_t>> layers;
  std::optional<Bundle> bundle;
  std::shared_ptr<ReplyPath> ack_to;
};

RxCore::RxCore(CommonOptions options, ReceiverCallbacks callbacks, std::string endpoint)
    : options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      endpoint_(std::move(endpoint)),
      metrics_(RegistryOr(options_.registry), endpoint_) {
  // Every abort reason exported from the start at 0, so alerts on its rate see the series.
  for (uint16_t c = uint16_t(AbortCode::kSenderAbort); c <= uint16_t(AbortCode::kShutdown); ++c) {
    metrics_.Abort(AbortCodeName(static_cast<AbortCode>(c)));
  }
  std::random_device rd;
  next_ticket_ = ((uint64_t{rd()} << 32) ^ rd()) | 1;  // tickets of different receivers differ
  ticker_ = std::thread([this] {
    std::unique_lock lk(tick_mu_);
    while (!tick_cv_.wait_for(lk, kTickPeriod, [&] { return stopping_; })) {
      lk.unlock();
      Tick();
      lk.lock();
    }
  });
}

RxCore::~RxCore() {
  Shutdown();
}

Ticket RxCore::IssueTicket(const TicketSpec& spec) {
  std::lock_guard lk(mu_);
  uint64_t id = next_ticket_++;
  RxTicket t;
  t.spec = spec;
  t.last_activity = Clock::now();
  tickets_.emplace(id, std::move(t));
  metrics_.open_tickets.Set(static_cast<double>(tickets_.size()));
  return Ticket{id, spec.budget_bytes, spec.skip_tokens};
}

void RxCore::Cancel(uint64_t ticket, std::string reason) {
  Pending p;
  {
    std::lock_guard lk(mu_);
    AbortLocked(ticket, AbortCode::kReceiverCancel, "receiver cancelled: " + reason, true, p);
  }
  Run(p);
}

ReceiverStats RxCore::Stats() const {
  std::lock_guard lk(mu_);
  return {tickets_.size(), buffered_, received_, committed_, aborted_};
}

void RxCore::Shutdown() {
  Pending p;
  {
    std::lock_guard lk(mu_);
    shut_ = true;
    std::vector<uint64_t> ids;
    for (auto& [id, t] : tickets_) ids.push_back(id);
    for (auto id : ids) AbortLocked(id, AbortCode::kShutdown, "receiver shutting down", true, p);
  }
  Run(p);
  {
    std::lock_guard lk(tick_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  tick_cv_.notify_all();
  if (ticker_.joinable() && ticker_.get_id() != std::this_thread::get_id()) ticker_.join();
}

void RxCore::Touch(RxTicket& t, const std::shared_ptr<ReplyPath>& from) {
  t.last_activity = Clock::now();
  if (from && t.path_ids.insert(from.get()).second) t.paths.push_back(from);
}

void RxCore::AbortLocked(uint64_t id, AbortCode code, const std::string& reason, bool tell_peer,
                         Pending& out) {
  auto it = tickets_.find(id);
  if (it == tickets_.end()) return;
  RxTicket& t = it->second;
  if (tell_peer) {
    for (auto& w : t.paths)
      if (auto p = w.lock()) out.replies.push_back({p, AbortFrame(id, code, reason), false});
  }
  out.aborts.emplace_back(id, Status(wire::AbortCodeToStatus(code), reason));
  buffered_ -= t.reserved;
  ++aborted_;
  tickets_.erase(it);
  finished_[id] = code;
  finished_order_.push_back(id);
  if (finished_order_.size() > 8192) {
    finished_.erase(finished_order_.front());
    finished_order_.erase(finished_order_.begin());
  }
  metrics_.aborted.Inc();
  metrics_.Abort(AbortCodeName(code)).Inc();
  metrics_.open_tickets.Set(static_cast<double>(tickets_.size()));
  metrics_.buffered.Set(static_cast<double>(buffered_));
  spdlog::info("transport: receiver {} aborted ticket {}: {}", endpoint_, id, reason);
}

void RxCore::MaybeFinishLocked(uint64_t id, Pending& out) {
  auto it = tickets_.find(id);
  if (it == tickets_.end()) return;
  RxTicket& t = it->second;
  if (!t.open_seen || !t.commit || t.chunks_in_progress > 0) return;
  if (static_cast<size_t>(std::count(t.commits.begin(), t.commits.end(), true)) < t.commits.size())
    return;
  // Every stripe's COMMIT arrived, and each connection is ordered, so all data sent is here.
  const auto& c = *t.commit;
  uint64_t total = 0;
  for (uint32_t i = 0; i < c.num_segments; ++i) {
    auto s = t.segments.find(i);
    if (s == t.segments.end()) {
      AbortLocked(id, AbortCode::kTruncated,
                  "truncated bundle: segment " + std::to_string(i) + " of " +
                      std::to_string(c.num_segments) + " never arrived",
                  true, out);
      return;
    }
    if (s->second.received != s->second.length || !s->second.verified) {
      AbortLocked(id, AbortCode::kTruncated,
                  "truncated segment " + std::to_string(i) + ": got " +
                      std::to_string(s->second.received) + " of " +
                      std::to_string(s->second.length) + " bytes",
                  true, out);
      return;
    }
    if (s->second.info.layer >= t.header.layers.size()) {
      AbortLocked(id, AbortCode::kProtocol,
                  "segment " + std::to_string(i) + " names layer " +
                      std::to_string(s->second.info.layer) + " beyond the header's layer table",
                  true, out);
      return;
    }
    total += s->second.length;
  }
  if (t.segments.size() != c.num_segments || total != c.total_bytes) {
    AbortLocked(id, AbortCode::kTruncated,
                "commit announces " + std::to_string(c.num_segments) + " segments / " +
                    std::to_string(c.total_bytes) + " bytes, received " +
                    std::to_string(t.segments.size()) + " / " + std::to_string(total),
                true, out);
    return;
  }
  Bundle b;
  b.header = std::move(t.header);
  b.header.ticket_id = id;
  b.total_bytes = total;
  b.segments.reserve(t.segments.size());
  for (auto& [idx, s] : t.segments)
    b.segments.push_back(Segment{s.info, s.crc, s.length, std::move(s.buf)});
  // The ACK goes back on a live connection that carried this session.
  for (auto w = t.paths.rbegin(); w != t.paths.rend() && !out.ack_to; ++w) out.ack_to = w->lock();
  buffered_ -= t.reserved;
  ++committed_;
  tickets_.erase(it);
  finished_[id] = AbortCode::kSenderAbort;  // any value: the id is done
  finished_order_.push_back(id);
  metrics_.committed.Inc();
  metrics_.open_tickets.Set(static_cast<double>(tickets_.size()));
  metrics_.buffered.Set(static_cast<double>(buffered_));
  out.bundle = std::move(b);
}

void RxCore::Run(Pending& p) {
  for (auto& [ticket, layer] : p.layers)
    if (callbacks_.on_layer_complete) callbacks_.on_layer_complete(ticket, layer);
  for (auto& [ticket, s] : p.aborts)
    if (callbacks_.on_abort) callbacks_.on_abort(ticket, s);
  if (p.bundle) {
    const uint64_t id = p.bundle->header.ticket_id, total = p.bundle->total_bytes;
    if (callbacks_.on_commit) callbacks_.on_commit(std::move(*p.bundle));
    if (p.ack_to)
      p.ack_to->SendControl(wire::ControlFrame(FrameType::kAck, id, wire::EncodeAck(total)), false);
  }
  for (auto& r : p.replies) r.path->SendControl(std::move(r.frame), r.close_after);
}

Status RxCore::OnControl(const std::shared_ptr<ReplyPath>& from, const wire::FrameHeader& h,
                         std::span<const std::byte> body) {
  Pending p;
  Status result;
  {
    std::lock_guard lk(mu_);
    auto it = tickets_.find(h.ticket);
    if (it == tickets_.end()) {
      if (!finished_.count(h.ticket) &&
          (h.type == FrameType::kOpen || h.type == FrameType::kCommit)) {
        p.replies.push_back(
            {from,
             AbortFrame(h.ticket, shut_ ? AbortCode::kShutdown : AbortCode::kUnknownTicket,
                        "unknown ticket " + std::to_string(h.ticket)),
             false});
      }
    } else {
      RxTicket& t = it->second;
      Touch(t, from);
      switch (h.type) {
        case FrameType::kOpen: {
          auto hdr = wire::DecodeOpen(h.ticket, body);
          if (t.open_seen) {
            AbortLocked(h.ticket, AbortCode::kProtocol, "duplicate OPEN", true, p);
          } else if (!hdr.ok()) {
            AbortLocked(h.ticket, AbortCode::kProtocol, hdr.status().message(), true, p);
          } else if (hdr->model_fingerprint != t.spec.model_fingerprint) {
            AbortLocked(h.ticket, AbortCode::kFingerprint,
                        "model fingerprint mismatch: bundle has " +
                            std::to_string(hdr->model_fingerprint) + ", ticket expects " +
                            std::to_string(t.spec.model_fingerprint),
                        true, p);
          } else if (hdr->token_begin != t.spec.skip_tokens) {
            AbortLocked(h.ticket, AbortCode::kProtocol,
                        "bundle starts at token " + std::to_string(hdr->token_begin) +
                            " but the receiver holds " + std::to_string(t.spec.skip_tokens),
                        true, p);
          } else {
            t.header = std::move(hdr).value();
            t.open_seen = true;
            MaybeFinishLocked(h.ticket, p);
          }
          break;
        }
        case FrameType::kCommit: {
          auto c = wire::DecodeCommit(body);
          if (!c.ok()) {
            AbortLocked(h.ticket, AbortCode::kProtocol, c.status().message(), true, p);
            break;
          }
          if (t.commit && (t.commit->num_stripes != c->num_stripes ||
                           t.commit->num_segments != c->num_segments ||
                           t.commit->total_bytes != c->total_bytes)) {
            AbortLocked(h.ticket, AbortCode::kProtocol, "inconsistent COMMIT frames", true, p);
            break;
          }
          if (!t.commit) {
            t.commit = *c;
            t.commits.assign(c->num_stripes, false);
          }
          if (t.commits[c->stripe]) {
            AbortLocked(h.ticket, AbortCode::kProtocol, "duplicate COMMIT on a stripe", true, p);
            break;
          }
          t.commits[c->stripe] = true;
          MaybeFinishLocked(h.ticket, p);
          break;
        }
        case FrameType::kAbort: {
          auto a = wire::DecodeAbort(body);
          AbortLocked(h.ticket, a.ok() ? a->code : AbortCode::kProtocol,
                      a.ok() ? "sender aborted: " + a->reason : a.status().message(), false, p);
          break;
        }
        default:
          AbortLocked(h.ticket, AbortCode::kProtocol,
                      "unexpected frame type " + std::to_string(static_cast<int>(h.type)), true, p);
          result = Internal("unexpected frame type from sender");
      }
    }
  }
  Run(p);
  return result;
}

ChunkTarget RxCore::BeginChunk(const std::shared_ptr<ReplyPath>& from, uint64_t ticket,
                               const wire::DataDesc& d) {
  Pending p;
  ChunkTarget target;
  {
    std::lock_guard lk(mu_);
    auto it = tickets_.find(ticket);
    if (it != tickets_.end()) {
      RxTicket& t = it->second;
      Touch(t, from);
      auto s = t.segments.find(d.seg_index);
      if (s == t.segments.end()) {
        if (d.seg_length > t.spec.budget_bytes - t.reserved) {
          AbortLocked(ticket, AbortCode::kBudget,
                      "bundle exceeds the ticket budget of " + std::to_string(t.spec.budget_bytes) +
                          " bytes",
                      true, p);
        } else if (t.open_seen && d.info.layer >= t.header.layers.size()) {
          AbortLocked(ticket, AbortCode::kProtocol, "segment names a layer beyond the header", true,
                      p);
        } else {
          RxSegment seg;
          seg.info = d.info;
          seg.seg_in_layer = d.seg_in_layer;
          seg.crc = d.seg_crc;
          seg.length = d.seg_length;
          seg.buf = AllocSegment(d.seg_length);
          t.reserved += d.seg_length;
          buffered_ += d.seg_length;
          metrics_.buffered.Set(static_cast<double>(buffered_));
          s = t.segments.emplace(d.seg_index, std::move(seg)).first;
        }
      } else if (s->second.length != d.seg_length || s->second.crc != d.seg_crc ||
                 !(s->second.info == d.info) || s->second.seg_in_layer != d.seg_in_layer) {
        AbortLocked(ticket, AbortCode::kProtocol,
                    "inconsistent descriptors for segment " + std::to_string(d.seg_index), true, p);
        s = {};
      }
      if (tickets_.count(ticket) && s != decltype(s){}) {
        RxSegment& seg = s->second;
        bool overlaps = d.chunk_offset + d.chunk_len > seg.length;
        auto next = seg.chunks.lower_bound(d.chunk_offset);
        if (next != seg.chunks.end() &&
            next->first < d.chunk_offset + std::max<uint64_t>(d.chunk_len, 1))
          overlaps = true;
        if (next != seg.chunks.begin() &&
            std::prev(next)->first + std::prev(next)->second.len > d.chunk_offset)
          overlaps = true;
        if (overlaps || seg.received + d.chunk_len > seg.length) {
          AbortLocked(ticket, AbortCode::kProtocol,
                      "duplicate or overlapping chunk in segment " + std::to_string(d.seg_index),
                      true, p);
        } else {
          seg.chunks.emplace(d.chunk_offset, RxChunk{d.chunk_len, 0});
          ++t.chunks_in_progress;
          target.buf = seg.buf;
          target.dst = seg.buf.get() + d.chunk_offset;
        }
      }
    }
  }
  Run(p);
  return target;
}

void RxCore::EndChunk(uint64_t ticket, const wire::DataDesc& d, ChunkTarget target) {
  if (!target.dst) return;
  // Checksum the chunk now, on the connection's thread, while its bytes are still in cache; the
  // segment's CRC is combined from its chunks' once all have landed.
  const uint32_t chunk_crc = Crc32c(target.dst, d.chunk_len);
  Pending p;
  std::unique_lock lk(mu_);
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return;
  auto s = it->second.segments.find(d.seg_index);
  if (s == it->second.segments.end()) return;
  if (auto c = s->second.chunks.find(d.chunk_offset); c != s->second.chunks.end())
    c->second.crc = chunk_crc;
  s->second.received += d.chunk_len;
  received_ += d.chunk_len;
  metrics_.received.Inc(static_cast<double>(d.chunk_len));
  if (s->second.received == s->second.length) {
    // Chunks do not overlap and add up to the length, so in offset order they are the segment.
    uint32_t got = 0;
    for (const auto& [off, c] : s->second.chunks) got = Crc32cCombine(got, c.crc, c.len);
    const uint32_t want = s->second.crc;
    RxTicket& t = it->second;
    if (got != want) {
      char msg[160];
      std::snprintf(msg, sizeof msg,
                    "checksum mismatch in segment %u (layer %u, %s): crc32c %08x, expected %08x",
                    d.seg_index, d.info.layer, SegmentKindName(d.info.kind), got, want);
      AbortLocked(ticket, AbortCode::kChecksum, msg, true, p);
    } else {
      s->second.verified = true;
      const uint32_t layer = s->second.info.layer;
      uint32_t done = ++t.layer_done[layer];
      // The layer's last segment tells how many it has; report once all are verified.
      for (auto& [i, seg] : t.segments) {
        if (seg.info.layer == layer && seg.info.last_of_layer &&
            done == static_cast<uint32_t>(seg.seg_in_layer) + 1 &&
            t.layers_reported.insert(layer).second) {
          p.layers.emplace_back(ticket, layer);
        }
      }
    }
  }
  it = tickets_.find(ticket);
  if (it != tickets_.end()) {
    --it->second.chunks_in_progress;
    MaybeFinishLocked(ticket, p);
  }
  lk.unlock();
  Run(p);
}

void RxCore::OnUnknownVersion(const std::shared_ptr<ReplyPath>& from, const wire::FrameHeader& h) {
  Pending p;
  const std::string reason = "unsupported protocol version " + std::to_string(h.version) +
                             " (this receiver speaks " + std::to_string(kProtocolVersion) + ")";
  {
    std::lock_guard lk(mu_);
    AbortLocked(h.ticket, AbortCode::kUnknownVersion, reason, false, p);
  }
  p.replies.push_back({from, AbortFrame(h.ticket, AbortCode::kUnknownVersion, reason), true});
  Run(p);
}

void RxCore::OnConnectionLost(const ReplyPath* from, const Status& reason) {
  Pending p;
  {
    std::lock_guard lk(mu_);
    std::vector<uint64_t> ids;
    for (auto& [id, t] : tickets_)
      if (t.path_ids.count(from)) ids.push_back(id);
    for (auto id : ids)
      AbortLocked(id, AbortCode::kConnectionLost, "connection lost: " + reason.message(), true, p);
  }
  Run(p);
}

void RxCore::Tick() {
  Pending p;
  {
    std::lock_guard lk(mu_);
    const auto now = Clock::now();
    std::vector<std::pair<uint64_t, int64_t>> idle;
    for (auto& [id, t] : tickets_)
      if (now - t.last_activity > t.spec.idle_timeout)
        idle.emplace_back(id, static_cast<int64_t>(t.spec.idle_timeout.count()));
    for (auto [id, ms] : idle)
      AbortLocked(id, AbortCode::kIdleTimeout,
                  "idle timeout: no frame for " + std::to_string(ms) + " ms", true, p);
  }
  Run(p);
}

}  // namespace prfaas::transport::internal

namespace prfaas::transport {

void SetReceiveBufferPoolBytes(uint64_t bytes) {
  internal::SegmentPool::Get().SetLimit(bytes);
}
uint64_t ReceiveBufferPoolCachedBytes() {
  return internal::SegmentPool::Get().cached();
}

}  // namespace prfaas::transport
