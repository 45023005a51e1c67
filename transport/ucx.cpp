// UCX backend (UCP stream API): a Sender is N UCP endpoints ("stripes") to one receiver's UCP
// listener; frames travel exactly as on TCP (docs/wire-format.md), since a UCP stream endpoint
// is an ordered byte stream like a TCP connection. UCX picks the wire underneath (tcp, shared
// memory, or RDMA verbs where present), restricted by UcxOptions::transports / net_devices.
//
// Threading: each Sender and Receiver owns one UCP context + worker driven by one progress
// thread; every UCP call happens on that thread. Other threads hand it work through Post(). When
// idle, the thread sleeps in epoll on the worker's event fd and on an eventfd Post() writes, so
// an idle link costs no CPU. Receiver callbacks run on the receiver's progress thread.
//
// Stream receives use UCP_STREAM_RECV_FLAG_WAITALL: the receiver asks for exactly the frame
// header, then the DATA descriptor, then the payload straight into the segment buffer the
// protocol engine chose (RxCore::BeginChunk), as the TCP backend does with read().
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <deque>
#include <functional>
#include <future>
#include <set>

#include "transport/endpoint.h"
#include "transport/session.h"

namespace prfaas::transport {
namespace {

using Clock = std::chrono::steady_clock;
using internal::OutFrame;
using internal::RxCore;
using internal::SenderCore;
using internal::SendQueue;

std::string UcsText(ucs_status_t s) {
  return ucs_status_string(s);
}

// Fills a sockaddr for an IPv4 or IPv6 literal.
Result<socklen_t> MakeSockaddr(const std::string& host, uint16_t port, sockaddr_storage* out) {
  *out = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return static_cast<socklen_t>(sizeof(sockaddr_in));
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return static_cast<socklen_t>(sizeof(sockaddr_in6));
  }
  return InvalidArgument("UCX address '" + host + "' is not an IP literal");
}

// ---- progress thread -------------------------------------------------------------------------

class UcxWorker {
 public:
  static Result<std::unique_ptr<UcxWorker>> Create(const UcxOptions& o, std::string name) {
    auto w = std::unique_ptr<UcxWorker>(new UcxWorker(std::move(name)));
    std::promise<Status> started;
    auto fut = started.get_future();
    w->thread_ = std::thread([raw = w.get(), &o, &started] { raw->Run(o, started); });
    Status st = fut.get();
    if (!st.ok()) {
      w->thread_.join();
      return st;
    }
    return w;
  }
  ~UcxWorker() { Stop(); }

  // Queues fn to run on the progress thread; dropped once the worker has stopped.
  void Post(std::function<void()> fn) {
    std::lock_guard lk(mu_);  // held across the write: Run() closes wake_fd_ once stopped_
    if (stopped_) return;
    posted_.push_back(std::move(fn));
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }

  // Runs fn on the progress thread once `delay` has passed (progress thread only).
  void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) {
    timers_.emplace_back(Clock::now() + delay, std::move(fn));
  }

  // Runs fn on the progress thread and returns its result.
  template <typename F>
  auto Call(F fn) -> decltype(fn()) {
    if (OnThread()) return fn();
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto fut = task.get_future();
    Post([&task] { task(); });
    return fut.get();
  }

  bool OnThread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // Runs what is posted, waits (bounded) for outstanding requests, tears UCP down, joins.
  void Stop() {
    if (!thread_.joinable()) return;
    Post([this] {
      stopping_ = true;
      stop_deadline_ = Clock::now() + std::chrono::seconds(2);
    });
    thread_.join();
  }

  ucp_worker_h worker() const { return worker_; }
  // Requests posted on this worker whose callback has not run yet (progress thread only).
  void RequestStarted() { ++live_requests_; }
  void RequestDone() { --live_requests_; }

 private:
  explicit UcxWorker(std::string name) : name_(std::move(name)) {}

  Status Init(const UcxOptions& o) {
    ucp_config_t* config = nullptr;
    ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
    if (s != UCS_OK) return Unavailable("ucp_config_read: " + UcsText(s));
    auto modify = [&](const char* key, const std::string& value) {
      if (value.empty()) return UCS_OK;
      return ucp_config_modify(config, key, value.c_str());
    };
    if ((s = modify("TLS", o.transports)) != UCS_OK ||
        (s = modify("NET_DEVICES", o.net_devices)) != UCS_OK) {
      ucp_config_release(config);
      return InvalidArgument("bad UCX transport settings (TLS='" + o.transports +
                             "', NET_DEVICES='" + o.net_devices + "'): " + UcsText(s));
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    params.features = UCP_FEATURE_STREAM | UCP_FEATURE_WAKEUP;
    params.name = name_.c_str();
    s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (s != UCS_OK) return Unavailable("ucp_init: " + UcsText(s));
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
    if ((s = ucp_worker_create(context_, &wp, &worker_)) != UCS_OK) {
      ucp_cleanup(context_);
      return Unavailable("ucp_worker_create: " + UcsText(s));
    }
    int efd = -1;
    if ((s = ucp_worker_get_efd(worker_, &efd)) != UCS_OK) {
      Teardown();
      return Unavailable("ucp_worker_get_efd: " + UcsText(s));
    }
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = efd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, efd, &ev);
    ev.data.fd = wake_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    return Status::Ok();
  }

  void Teardown() {
    if (worker_) ucp_worker_destroy(worker_);
    if (context_) ucp_cleanup(context_);
    worker_ = nullptr;
    context_ = nullptr;
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    epoll_fd_ = wake_fd_ = -1;
  }

  bool RunPosted() {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lk(mu_);
      batch.swap(posted_);
    }
    const auto now = Clock::now();
    for (size_t i = 0; i < timers_.size();) {
      if (timers_[i].first <= now || stopping_) {
        batch.push_back(std::move(timers_[i].second));
        timers_.erase(timers_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    for (auto& fn : batch) fn();
    return !batch.empty();
  }

  void Run(const UcxOptions& o, std::promise<Status>& started) {
    Status st = Init(o);
    if (!st.ok()) {
      std::lock_guard lk(mu_);
      stopped_ = true;
      started.set_value(st);
      return;
    }
    started.set_value(Status::Ok());
    while (true) {
      bool worked = RunPosted();
      while (ucp_worker_progress(worker_) != 0) worked = true;
      if (stopping_ && !worked && (live_requests_ == 0 || Clock::now() > stop_deadline_)) break;
      if (worked) continue;
      if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) continue;
      epoll_event ev[2];
      // Bounded sleep while requests are outstanding: wakeups for UCT send completions are not
      // guaranteed on every transport, so keep completing them within a millisecond.
      const int timeout_ms = live_requests_ > 0 || !timers_.empty() ? 1 : 1000;
      (void)::epoll_wait(epoll_fd_, ev, 2, stopping_ ? 1 : timeout_ms);
      uint64_t drained;
      while (::read(wake_fd_, &drained, sizeof drained) > 0) {
      }
    }
    if (live_requests_ > 0)
      spdlog::warn("transport: UCX worker {} stopped with {} requests outstanding", name_,
                   live_requests_);
    {
      std::lock_guard lk(mu_);
      stopped_ = true;
      posted_.clear();
    }
    Teardown();
  }

  const std::string name_;
  std::thread thread_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int wake_fd_ = -1, epoll_fd_ = -1;
  std::mutex mu_;
  std::deque<std::function<void()>> posted_;
  bool stopped_ = false;
  // Progress thread only.
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
  int live_requests_ = 0;
  std::vector<std::pair<Clock::time_point, std::function<void()>>> timers_;
};

// ---- one endpoint ----------------------------------------------------------------------------

// One UCP stream endpoint, used by both sides: the sender writes frames and reads replies, the
// receiver reads frames and writes replies. Everything but Enqueue/Purge/Close/SendControl runs
// on the progress thread.
class UcxConn : public internal::ReplyPath, public std::enable_shared_from_this<UcxConn> {
 public:
  UcxConn(UcxWorker* worker, std::string peer) : worker_(worker), peer_(std::move(peer)) {}

  void SetSender(std::shared_ptr<SenderCore> tx) { tx_ = std::move(tx); }
  void SetReceiver(std::shared_ptr<RxCore> rx, std::function<void(UcxConn*)> on_closed) {
    rx_ = std::move(rx);
    on_closed_ = std::move(on_closed);
  }
  const std::string& peer() const { return peer_; }

  // Progress thread: creates the endpoint (from a listener's request, or towards sa) and starts
  // reading.
  Status Open(ucp_conn_request_h request, const sockaddr_storage* sa, socklen_t sa_len) {
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;  // a dead peer fails the endpoint, never hangs
    p.err_handler.cb = &UcxConn::OnEpError;
    p.err_handler.arg = this;
    if (request) {
      p.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
      p.conn_request = request;
    } else {
      p.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
      p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
      p.sockaddr.addr = reinterpret_cast<const sockaddr*>(sa);
      p.sockaddr.addrlen = sa_len;
    }
    ucs_status_t s = ucp_ep_create(worker_->worker(), &p, &ep_);
    if (s != UCS_OK) {
      bool first = false;
      (void)queue_.Close("ucp_ep_create: " + UcsText(s), &first);
      return Unavailable("UCX endpoint to " + peer_ + ": " + UcsText(s));
    }
    self_ = shared_from_this();  // the endpoint's error handler points at us until it closes
    Pump();
    return Status::Ok();
  }

  // Progress thread: completes `done` once the endpoint has flushed (i.e. is connected) or failed.
  void Flush(std::function<void(Status)> done) {
    if (!ep_) return done(Unavailable("endpoint closed: " + queue_.reason()));
    struct Op {
      std::shared_ptr<UcxConn> conn;
      std::function<void(Status)> done;
    };
    auto* op = new Op{shared_from_this(), std::move(done)};
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.user_data = op;
    p.cb.send = [](void* req, ucs_status_t s, void* user) {
      auto* op = static_cast<Op*>(user);
      ucp_request_free(req);
      op->conn->worker_->RequestDone();
      op->done(s == UCS_OK ? Status::Ok() : Unavailable("UCX connect: " + UcsText(s)));
      delete op;
    };
    ucs_status_ptr_t r = ucp_ep_flush_nbx(ep_, &p);
    if (r == nullptr || UCS_PTR_IS_ERR(r)) {
      op->done(r == nullptr ? Status::Ok()
                            : Unavailable("UCX connect: " + UcsText(UCS_PTR_STATUS(r))));
      delete op;
      return;
    }
    worker_->RequestStarted();
  }

  // Any thread.
  Status Enqueue(OutFrame f, bool close_after = false) {
    bool start = false;
    Status st = queue_.Push(std::move(f), close_after, "UCX endpoint to " + peer_, &start);
    if (start) worker_->Post([self = shared_from_this()] { self->WriteNext(); });
    return st;
  }

  void SendControl(std::vector<std::byte> frame, bool close_after) override {
    OutFrame f;
    f.head = std::move(frame);
    (void)Enqueue(std::move(f), close_after);
  }

  void Purge(uint64_t ticket) {
    for (auto& f : queue_.TakeTicket(ticket)) Done(f, false);
  }

  void Close(const Status& reason) {
    worker_->Post([self = shared_from_this(), reason] { self->DoClose(reason); });
  }

  bool closed() const { return queue_.closed(); }
  void AddKernelStats(internal::KernelStats&) {}  // UCP exposes no RTT or unacked bytes

 private:
  // One frame being sent.
  struct SendOp {
    std::shared_ptr<UcxConn> conn;
    SendQueue::Item q;
    ucp_dt_iov_t iov[2];
    int pending = 0;
    bool ok = true;
    ucs_status_t error = UCS_OK;
  };
  enum class RxState { kHeader, kDesc, kBody, kPayload, kDiscard, kStopped };
  // One send at a time per endpoint: with several stream sends outstanding on one endpoint,
  // UCX 1.13 over its tcp transport delivered them out of order under load (the receiver saw a
  // payload where a frame header belonged), so the next frame waits for the previous one.
  // Parallelism comes from the endpoints (stripes) instead.
  static constexpr int kMaxFramesInFlight = 1;
  static constexpr std::chrono::milliseconds kLingerAfterFatalReply{200};

  void Done(const OutFrame& f, bool ok) {
    if (tx_) tx_->OnFrameDone(f, ok);
  }

  // ---- writes (progress thread) ----

  // Posts queued frames while the window allows. Sends that complete inline come back through
  // SendStep inside this loop, which then just continues (no recursion per frame).
  void WriteNext() {
    in_write_loop_ = true;
    while (in_flight_ < kMaxFramesInFlight) {
      auto next = queue_.Pop();
      if (!next) break;
      auto op = std::make_unique<SendOp>();
      op->q = std::move(*next);
      op->conn = shared_from_this();
      ++in_flight_;
      op->pending = 1;
      PostSend(op.release());
    }
    in_write_loop_ = false;
    // Window full: the queue stays busy (no Pop found it empty) and SendStep calls WriteNext
    // again.
  }

  // Header and borrowed payload go out as one gather send (no copy on our side).
  void PostSend(SendOp* op) {
    if (!ep_) return SendStep(op, UCS_ERR_CANCELED);
    OutFrame& f = op->q.frame;
    op->iov[0] = {f.head.data(), f.head.size()};
    op->iov[1] = {const_cast<std::byte*>(f.payload.data()), f.payload.size()};
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    p.datatype = ucp_dt_make_iov();
    p.user_data = op;
    p.cb.send = [](void* req, ucs_status_t s, void* user) {
      auto* op = static_cast<SendOp*>(user);
      ucp_request_free(req);
      auto conn = op->conn;  // SendStep frees op, which may hold the last reference
      conn->worker_->RequestDone();
      conn->SendStep(op, s);
    };
    const size_t n = f.payload.empty() ? 1 : 2;
    ucs_status_ptr_t r = ucp_stream_send_nbx(ep_, op->iov, n, &p);
    if (r == nullptr) return SendStep(op, UCS_OK);  // done already (copied out)
    if (UCS_PTR_IS_ERR(r)) return SendStep(op, UCS_PTR_STATUS(r));
    worker_->RequestStarted();
  }

  void SendStep(SendOp* op, ucs_status_t s) {
    if (s != UCS_OK) {
      op->ok = false;
      op->error = s;
    }
    if (--op->pending > 0) return;
    std::unique_ptr<SendOp> owned(op);
    --in_flight_;
    Done(owned->q.frame, owned->ok);
    if (!owned->ok) {
      DoClose(Unavailable("UCX send to " + peer_ + " failed: " + UcsText(owned->error)));
    } else if (owned->q.close_after) {
      // Unlike a TCP FIN, a UCX disconnect can overtake data the peer has not consumed yet:
      // give the peer a moment to read the fatal reply before the endpoint goes.
      worker_->RunAfter(kLingerAfterFatalReply, [self = shared_from_this()] {
        self->DoClose(Unavailable("closed after a fatal reply"), /*flush=*/true);
      });
    }
    owned.reset();  // the frame (and any staging slot it holds) goes now
    if (!in_write_loop_) WriteNext();
  }

  // ---- reads (progress thread) ----

  // Posts receives for the current state until one has to wait for data. A receive may come
  // back short of what was asked (UCX hands over what it holds); the rest is asked for again.
  void Pump() {
    while (rx_state_ != RxState::kStopped && ep_) {
      std::byte* buf = nullptr;
      size_t len = 0;
      switch (rx_state_) {
        case RxState::kHeader: buf = hdr_.data(), len = hdr_.size(); break;
        case RxState::kDesc: buf = desc_.data(), len = desc_.size(); break;
        case RxState::kBody: buf = body_.data(), len = body_.size(); break;
        case RxState::kPayload: buf = target_.dst, len = d_.chunk_len; break;
        case RxState::kDiscard:
          if (scratch_.empty()) scratch_.resize(256 << 10);
          buf = scratch_.data(), len = std::min<uint64_t>(discard_left_, scratch_.size());
          break;
        case RxState::kStopped: return;
      }
      last_len_ = len;
      if (rx_filled_ >= len) {
        rx_filled_ = 0;
        Advance();
        continue;
      }
      ucp_request_param_t p{};
      p.op_attr_mask =
          UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_STREAM_RECV_FLAG_WAITALL;
      p.user_data = this;
      p.cb.recv_stream = [](void* req, ucs_status_t s, size_t n, void* user) {
        auto* c = static_cast<UcxConn*>(user);
        ucp_request_free(req);
        c->worker_->RequestDone();
        auto pin = std::move(c->recv_pin_);
        if (s != UCS_OK) return c->OnReadError(s);
        c->rx_filled_ += n;
        c->Pump();
      };
      size_t got = 0;
      ucs_status_ptr_t r = ucp_stream_recv_nbx(ep_, buf + rx_filled_, len - rx_filled_, &got, &p);
      if (r == nullptr) {
        rx_filled_ += got;
        continue;
      }
      if (UCS_PTR_IS_ERR(r)) return OnReadError(UCS_PTR_STATUS(r));
      recv_pin_ = shared_from_this();
      worker_->RequestStarted();
      return;
    }
  }

  // The receive for the current state completed: act on it and pick the next state.
  void Advance() {
    switch (rx_state_) {
      case RxState::kHeader: {
        auto h = wire::DecodeFrameHeader(hdr_);
        if (!h.ok()) return DoClose(h.status());
        h_ = *h;
        if (h_.version != kProtocolVersion) {
          rx_state_ = RxState::kStopped;  // the reply below closes the endpoint
          if (rx_)
            rx_->OnUnknownVersion(shared_from_this(), h_);
          else
            DoClose(FailedPrecondition("receiver speaks protocol version " +
                                       std::to_string(h_.version)));
          return;
        }
        if (h_.type == wire::FrameType::kData) {
          if (!rx_) return DoClose(Internal("DATA frame sent to a sender"));
          rx_state_ = RxState::kDesc;
        } else {
          body_.resize(h_.body_len);
          rx_state_ = RxState::kBody;
        }
        return;
      }
      case RxState::kDesc: {
        auto d = wire::DecodeDataDesc(desc_, h_.body_len);
        if (!d.ok()) return DoClose(d.status());
        d_ = *d;
        target_ = rx_->BeginChunk(shared_from_this(), h_.ticket, d_);
        if (target_.dst) {
          rx_state_ = RxState::kPayload;
        } else {
          discard_left_ = d_.chunk_len;
          rx_state_ = RxState::kDiscard;
        }
        return;
      }
      case RxState::kPayload:
        rx_->EndChunk(h_.ticket, d_, std::move(target_));
        target_ = {};
        rx_state_ = RxState::kHeader;
        return;
      case RxState::kDiscard:
        discard_left_ -= last_len_;
        if (discard_left_ == 0) rx_state_ = RxState::kHeader;
        return;
      case RxState::kBody: {
        rx_state_ = RxState::kHeader;
        Status st;
        if (rx_)
          st = rx_->OnControl(shared_from_this(), h_, body_);
        else if (tx_)
          tx_->OnControl(h_, body_);
        if (!st.ok()) DoClose(st);
        return;
      }
      case RxState::kStopped: return;
    }
  }

  void OnReadError(ucs_status_t s) {
    target_ = {};
    const bool mid_frame = rx_state_ != RxState::kHeader;
    std::string what = mid_frame ? "truncated frame from " + peer_ + " (" + UcsText(s) + ")"
                                 : "UCX endpoint to " + peer_ + " closed: " + UcsText(s);
    DoClose(mid_frame ? DataLoss(what) : Unavailable(what));
  }

  static void OnEpError(void* arg, ucp_ep_h, ucs_status_t s) {
    auto* c = static_cast<UcxConn*>(arg);
    auto pin = c->shared_from_this();
    c->DoClose(Unavailable("UCX endpoint to " + c->peer_ + " failed: " + UcsText(s)));
  }

  // flush: deliver what was sent before disconnecting (after a fatal reply); otherwise force:
  // outstanding sends and receives complete at once with UCS_ERR_CANCELED.
  void DoClose(const Status& reason, bool flush = false) {
    bool first = false;
    auto dropped = queue_.Close(reason.message(), &first);
    if (!first) return;
    rx_state_ = RxState::kStopped;
    for (auto& q : dropped) Done(q.frame, false);
    if (ep_) {
      ucp_request_param_t p{};
      p.op_attr_mask =
          UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.flags = flush ? 0 : UCP_EP_CLOSE_FLAG_FORCE;
      auto* pin = new std::shared_ptr<UcxConn>(std::move(self_));
      p.user_data = pin;
      p.cb.send = [](void* req, ucs_status_t, void* user) {
        auto* pin = static_cast<std::shared_ptr<UcxConn>*>(user);
        ucp_request_free(req);
        (*pin)->worker_->RequestDone();
        delete pin;
      };
      ucs_status_ptr_t r = ucp_ep_close_nbx(ep_, &p);
      ep_ = nullptr;
      if (r != nullptr && !UCS_PTR_IS_ERR(r))
        worker_->RequestStarted();
      else
        delete pin;
    }
    if (rx_) rx_->OnConnectionLost(this, reason);
    if (tx_) tx_->OnLinkFailed(reason);
    if (on_closed_) on_closed_(this);
  }

  UcxWorker* const worker_;
  const std::string peer_;
  std::shared_ptr<SenderCore> tx_;
  std::shared_ptr<RxCore> rx_;
  std::function<void(UcxConn*)> on_closed_;

  SendQueue queue_;

  // Progress thread only.
  ucp_ep_h ep_ = nullptr;
  std::shared_ptr<UcxConn> self_;      // keeps us alive while the endpoint exists
  std::shared_ptr<UcxConn> recv_pin_;  // ... and while a receive is outstanding
  int in_flight_ = 0;
  bool in_write_loop_ = false;
  RxState rx_state_ = RxState::kHeader;
  size_t last_len_ = 0;
  size_t rx_filled_ = 0;  // bytes of the current receive already in place
  std::array<std::byte, wire::kFrameHeaderSize> hdr_{};
  std::array<std::byte, wire::kDataDescSize> desc_{};
  wire::FrameHeader h_;
  wire::DataDesc d_;
  std::vector<std::byte> body_;
  internal::ChunkTarget target_;
  uint64_t discard_left_ = 0;
  std::vector<std::byte> scratch_;
};

// ---- sender ----------------------------------------------------------------------------------

using UcxLink = internal::StripedLink<UcxConn>;

using UcxSender = internal::StreamSender<UcxWorker>;

// ---- receiver --------------------------------------------------------------------------------

class UcxReceiver : public Receiver {
 public:
  explicit UcxReceiver(UcxOptions options) : options_(std::move(options)) {}
  ~UcxReceiver() override { Shutdown(); }

  Status Listen(const std::string& host, uint16_t port, ReceiverCallbacks callbacks) {
    PRFAAS_ASSIGN_OR_RETURN(worker_, UcxWorker::Create(options_, "prfaas-rx"));
    sockaddr_storage sa;
    PRFAAS_ASSIGN_OR_RETURN(socklen_t len, MakeSockaddr(host, port, &sa));
    Status st = worker_->Call([&]() -> Status {
      ucp_listener_params_t p{};
      p.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
      p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
      p.sockaddr.addrlen = len;
      p.conn_handler.cb = [](ucp_conn_request_h req, void* arg) {
        static_cast<UcxReceiver*>(arg)->OnConnRequest(req);
      };
      p.conn_handler.arg = this;
      ucs_status_t s = ucp_listener_create(worker_->worker(), &p, &listener_);
      if (s != UCS_OK)
        return Unavailable("UCX listen on " + host + ":" + std::to_string(port) +
                           " failed: " + UcsText(s));
      ucp_listener_attr_t attr{};
      attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
      if ((s = ucp_listener_query(listener_, &attr)) != UCS_OK)
        return Unavailable("ucp_listener_query: " + UcsText(s));
      const auto& ss = attr.sockaddr;
      const uint16_t bound =
          ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(ss).sin6_port
                                         : reinterpret_cast<const sockaddr_in&>(ss).sin_port);
      address_ = "ucx://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                 std::to_string(bound);
      return Status::Ok();
    });
    if (!st.ok()) return st;
    core_ = std::make_shared<RxCore>(options_.common, std::move(callbacks), address_);
    return Status::Ok();
  }

  Ticket IssueTicket(const TicketSpec& spec) override { return core_->IssueTicket(spec); }
  void Cancel(uint64_t id, std::string reason) override { core_->Cancel(id, std::move(reason)); }
  std::string address() const override { return address_; }
  ReceiverStats Stats() const override { return core_->Stats(); }

  void Shutdown() override {
    {
      std::lock_guard lk(mu_);
      if (shut_) return;
      shut_ = true;
    }
    if (core_) core_->Shutdown();  // queues ABORTs on live endpoints
    if (!worker_) return;
    worker_->Call([this] {
      if (listener_) ucp_listener_destroy(listener_);
      listener_ = nullptr;
      std::set<std::shared_ptr<UcxConn>> conns;
      {
        std::lock_guard lk(mu_);
        conns.swap(conns_);
      }
      for (auto& c : conns) c->Close(Unavailable("receiver shut down"));
      return 0;
    });
    worker_->Stop();
  }

 private:
  // Progress thread.
  void OnConnRequest(ucp_conn_request_h req) {
    std::string peer = "?";
    ucp_conn_request_attr_t attr{};
    attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    if (ucp_conn_request_query(req, &attr) == UCS_OK) {
      char ip[INET6_ADDRSTRLEN] = "?";
      const auto& ss = attr.client_address;
      uint16_t port = 0;
      if (ss.ss_family == AF_INET) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
        ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        port = ntohs(a.sin_port);
      } else if (ss.ss_family == AF_INET6) {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
        ::inet_ntop(AF_INET6, &a.sin6_addr, ip, sizeof ip);
        port = ntohs(a.sin6_port);
      }
      peer = std::string(ip) + ":" + std::to_string(port);
    }
    {
      std::lock_guard lk(mu_);
      if (shut_) {
        ucp_listener_reject(listener_, req);
        return;
      }
    }
    auto conn = std::make_shared<UcxConn>(worker_.get(), peer);
    conn->SetReceiver(core_, [this](UcxConn* c) {
      std::lock_guard lk(mu_);
      for (auto it = conns_.begin(); it != conns_.end(); ++it)
        if (it->get() == c) {
          conns_.erase(it);
          break;
        }
    });
    {
      std::lock_guard lk(mu_);
      conns_.insert(conn);
    }
    Status st = conn->Open(req, nullptr, 0);
    if (!st.ok()) {
      spdlog::warn("transport: {}", st.ToString());
      std::lock_guard lk(mu_);
      conns_.erase(conn);
    }
  }

  UcxOptions options_;
  std::unique_ptr<UcxWorker> worker_;
  ucp_listener_h listener_ = nullptr;
  std::shared_ptr<RxCore> core_;
  std::string address_;
  std::mutex mu_;
  bool shut_ = false;
  std::set<std::shared_ptr<UcxConn>> conns_;
};

}  // namespace

Result<std::unique_ptr<Receiver>> ListenUcx(const std::string& host, uint16_t port,
                                            const UcxOptions& options,
                                            ReceiverCallbacks callbacks) {
  if (!callbacks.on_commit) return InvalidArgument("on_commit callback is required");
  auto r = std::make_unique<UcxReceiver>(options);
  PRFAAS_RETURN_IF_ERROR(r->Listen(host, port, std::move(callbacks)));
  return std::unique_ptr<Receiver>(std::move(r));
}

Result<std::unique_ptr<Sender>> ConnectUcx(const std::string& host, uint16_t port,
                                           const UcxOptions& options) {
  if (options.connections < 1 || options.connections > 64)
    return InvalidArgument("connections must be in [1, 64]");
  sockaddr_storage sa;
  PRFAAS_ASSIGN_OR_RETURN(socklen_t len, MakeSockaddr(host, port, &sa));
  const std::string peer = "ucx://" + host + ":" + std::to_string(port);
  PRFAAS_ASSIGN_OR_RETURN(auto worker, UcxWorker::Create(options, "prfaas-tx"));
  auto core = std::make_shared<SenderCore>(options.common, peer);
  std::vector<std::shared_ptr<UcxConn>> conns;
  for (int i = 0; i < options.connections; ++i) {
    conns.push_back(std::make_shared<UcxConn>(worker.get(), peer));
    conns.back()->SetSender(core);
  }
  // Connect every endpoint, then wait until each has flushed (wire-up done) or failed.
  auto results = std::make_shared<std::vector<std::promise<Status>>>(conns.size());
  Status opened = worker->Call([&]() -> Status {
    for (size_t i = 0; i < conns.size(); ++i) {
      PRFAAS_RETURN_IF_ERROR(conns[i]->Open(nullptr, &sa, len));
      conns[i]->Flush([results, i](Status s) { (*results)[i].set_value(std::move(s)); });
    }
    return Status::Ok();
  });
  Status st = opened;
  const auto deadline = Clock::now() + options.connect_timeout;
  for (size_t i = 0; st.ok() && i < conns.size(); ++i) {
    auto fut = (*results)[i].get_future();
    if (fut.wait_until(deadline) != std::future_status::ready)
      st = DeadlineExceeded("connecting to " + peer + " timed out");
    else
      st = fut.get();
    if (st.ok() && conns[i]->closed()) st = Unavailable("connecting to " + peer + " failed");
  }
  if (!st.ok()) {
    for (auto& c : conns) c->Close(Cancelled("connect failed"));
    worker->Stop();
    return st.code() == StatusCode::kDeadlineExceeded
               ? st
               : Unavailable("connecting to " + peer + " failed: " + st.message());
  }
  core->AttachSink(std::make_shared<UcxLink>(conns));
  return std::unique_ptr<Sender>(std::make_unique<UcxSender>(std::move(worker), core));
}

}  // namespace prfaas::transport
