// In-process backend: frames are handed straight to the receiver's protocol engine on the
// caller's thread, through the same encode/decode path as the network backends. Used by tests and
// by the colocated mode (prefill and decode in one process).
#include <cstring>
#include <map>
#include <mutex>

#include "transport/session.h"

namespace prfaas::transport {
namespace {

using internal::OutFrame;
using internal::RxCore;
using internal::SenderCore;

std::mutex g_mu;
std::map<std::string, std::weak_ptr<RxCore>>& Registry() {
  static std::map<std::string, std::weak_ptr<RxCore>> r;
  return r;
}

// Answers from the receiver go straight to the sender's engine.
class InprocReply : public internal::ReplyPath {
 public:
  explicit InprocReply(std::weak_ptr<SenderCore> core) : core_(std::move(core)) {}
  void SendControl(std::vector<std::byte> frame, bool close_after) override {
    auto core = core_.lock();
    if (!core) return;
    auto h = wire::DecodeFrameHeader(frame);
    if (h.ok() && h->version == kProtocolVersion)
      core->OnControl(*h, std::span<const std::byte>(frame).subspan(wire::kFrameHeaderSize));
    if (close_after) core->OnLinkFailed(Unavailable("receiver closed the link"));
  }

 private:
  std::weak_ptr<SenderCore> core_;
};

class InprocSink : public internal::FrameSink {
 public:
  InprocSink(std::weak_ptr<RxCore> rx, std::weak_ptr<SenderCore> tx)
      : rx_(std::move(rx)), tx_(std::move(tx)), reply_(std::make_shared<InprocReply>(tx_)) {}

  int stripes() const override { return 1; }

  Status Enqueue(int, OutFrame f) override {
    {
      std::lock_guard lk(mu_);
      if (!failed_.ok()) return failed_;
    }
    auto rx = rx_.lock();
    auto tx = tx_.lock();
    if (!tx) return Unavailable("sender gone");
    if (!rx) {
      Status st = Unavailable("in-process receiver is gone");
      tx->OnLinkFailed(st);
      return st;
    }
    Deliver(*rx, f);
    tx->OnFrameDone(f, true);
    return Status::Ok();
  }

  void Purge(uint64_t) override {}  // nothing is ever queued
  void Fail(const Status& reason) override {
    std::lock_guard lk(mu_);
    if (failed_.ok()) failed_ = reason.ok() ? Unavailable("link failed") : reason;
  }
  internal::KernelStats SampleKernel() override { return {1, 0, 0, 0}; }

 private:
  void Deliver(RxCore& rx, const OutFrame& f) {
    auto h = wire::DecodeFrameHeader(f.head);
    if (!h.ok()) return;
    if (h->version != kProtocolVersion) {
      rx.OnUnknownVersion(reply_, *h);
      return;
    }
    auto rest = std::span<const std::byte>(f.head).subspan(wire::kFrameHeaderSize);
    if (h->type != wire::FrameType::kData) {
      (void)rx.OnControl(reply_, *h, rest);
      return;
    }
    auto d = wire::DecodeDataDesc(rest, h->body_len);
    if (!d.ok()) {
      rx.OnConnectionLost(reply_.get(), d.status());
      return;
    }
    auto target = rx.BeginChunk(reply_, h->ticket, *d);
    if (target.dst && d->chunk_len) std::memcpy(target.dst, f.payload.data(), d->chunk_len);
    rx.EndChunk(h->ticket, *d, std::move(target));
  }

  std::weak_ptr<RxCore> rx_;
  std::weak_ptr<SenderCore> tx_;
  std::shared_ptr<InprocReply> reply_;
  std::mutex mu_;
  Status failed_;
};

class InprocReceiver : public Receiver {
 public:
  InprocReceiver(std::string name, std::shared_ptr<RxCore> core)
      : name_(std::move(name)), core_(std::move(core)) {}
  ~InprocReceiver() override { Shutdown(); }
  Ticket IssueTicket(const TicketSpec& spec) override { return core_->IssueTicket(spec); }
  void Cancel(uint64_t id, std::string reason) override { core_->Cancel(id, std::move(reason)); }
  std::string address() const override { return name_; }
  ReceiverStats Stats() const override { return core_->Stats(); }
  void Shutdown() override {
    {
      std::lock_guard lk(g_mu);
      auto it = Registry().find(name_);
      if (it != Registry().end() && it->second.lock() == core_) Registry().erase(it);
    }
    core_->Shutdown();
  }

 private:
  std::string name_;
  std::shared_ptr<RxCore> core_;
};

class InprocSender : public Sender {
 public:
  explicit InprocSender(std::shared_ptr<SenderCore> core) : core_(std::move(core)) {}
  ~InprocSender() override { Close(); }
  Result<std::unique_ptr<OutboundBundle>> Begin(const BundleHeader& h, const Ticket& t) override {
    return core_->Begin(h, t);
  }
  LinkStats Stats() const override { return core_->Stats(); }
  void Close() override { core_->Close(Cancelled("sender closed")); }

 private:
  std::shared_ptr<SenderCore> core_;
};

}  // namespace

Result<std::unique_ptr<Receiver>> ListenInproc(const std::string& name,
                                               const CommonOptions& options,
                                               ReceiverCallbacks callbacks) {
  if (!callbacks.on_commit) return InvalidArgument("on_commit callback is required");
  std::lock_guard lk(g_mu);
  auto& slot = Registry()[name];
  if (slot.lock()) return AlreadyExists("in-process receiver '" + name + "' exists");
  auto core = std::make_shared<RxCore>(options, std::move(callbacks), "inproc:" + name);
  slot = core;
  return std::unique_ptr<Receiver>(std::make_unique<InprocReceiver>(name, core));
}

Result<std::unique_ptr<Sender>> ConnectInproc(const std::string& name,
                                              const CommonOptions& options) {
  std::shared_ptr<RxCore> rx;
  {
    std::lock_guard lk(g_mu);
    auto it = Registry().find(name);
    if (it != Registry().end()) rx = it->second.lock();
  }
  if (!rx) return Unavailable("no in-process receiver named '" + name + "'");
  auto core = std::make_shared<SenderCore>(options, "inproc:" + name);
  core->AttachSink(std::make_shared<InprocSink>(rx, core));
  return std::unique_ptr<Sender>(std::make_unique<InprocSender>(core));
}

}  // namespace prfaas::transport
