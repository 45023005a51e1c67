// TCP backend (Boost.Asio): a Sender is N parallel connections to one receiver; DATA chunks are
// striped round-robin across them and land directly in the receiver's segment buffers at their
// offset, so arrival order across connections does not matter. Optional TLS with mutual
// authentication (both sides present certificates signed by the configured CA).
//
// Each connection runs on its own strand; user threads only queue frames under a mutex and post.
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <future>
#include <set>

#include "transport/session.h"

namespace prfaas::transport {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Executor = asio::any_io_executor;  // a strand: one per connection
using TlsStream = ssl::stream<tcp::socket>;
using internal::OutFrame;
using internal::RxCore;
using internal::SenderCore;
using internal::SendQueue;

Result<std::shared_ptr<ssl::context>> MakeTlsContext(const TlsOptions& o, bool server) {
  try {
    auto ctx = std::make_shared<ssl::context>(server ? ssl::context::tls_server
                                                     : ssl::context::tls_client);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    ctx->use_certificate_chain_file(o.cert_file);
    ctx->use_private_key_file(o.key_file, ssl::context::pem);
    ctx->load_verify_file(o.ca_file);
    // Mutual authentication: each side must present a certificate chaining to the CA.
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    return ctx;
  } catch (const boost::system::system_error& e) {
    return InvalidArgument(std::string("TLS setup failed: ") + e.what());
  }
}

void SetSocketOptions(tcp::socket& s, const TcpOptions& o) {
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  if (o.sndbuf_bytes > 0) s.set_option(asio::socket_base::send_buffer_size(o.sndbuf_bytes), ec);
  if (o.rcvbuf_bytes > 0) s.set_option(asio::socket_base::receive_buffer_size(o.rcvbuf_bytes), ec);
}

// One TCP (or TLS) connection, used by both sides: the sender writes data and reads replies; the
// receiver reads data and writes replies.
class Conn : public internal::ReplyPath, public std::enable_shared_from_this<Conn> {
 public:
  // sock must have been created on its own strand; all of this connection's work runs there.
  Conn(tcp::socket sock, std::shared_ptr<ssl::context> tls) : strand_(sock.get_executor()) {
    if (tls)
      tls_ = std::make_unique<TlsStream>(std::move(sock), *tls);
    else
      plain_ = std::make_unique<tcp::socket>(std::move(sock));
  }

  void SetSender(std::shared_ptr<SenderCore> tx) { tx_ = std::move(tx); }
  void SetReceiver(std::shared_ptr<RxCore> rx, std::function<void(Conn*)> on_closed) {
    rx_ = std::move(rx);
    on_closed_ = std::move(on_closed);
  }
  tcp::socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }
  bool tls() const { return tls_ != nullptr; }
  TlsStream& tls_stream() { return *tls_; }
  const Executor& strand() const { return strand_; }
  std::string peer;

  void Start() {
    asio::post(strand_, [self = shared_from_this()] { self->ReadHeader(); });
  }

  Status Enqueue(OutFrame f, bool close_after = false) {
    bool start = false;
    Status st = queue_.Push(std::move(f), close_after, "connection to " + peer, &start);
    if (start) asio::post(strand_, [self = shared_from_this()] { self->WriteNext(); });
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
    asio::post(strand_, [self = shared_from_this(), reason] { self->DoClose(reason); });
  }

  // Adds the kernel numbers last sampled, and asks the strand (the fd is only touched there) to
  // refresh them for the next call.
  void AddKernelStats(internal::KernelStats& k) {
    asio::post(strand_, [self = shared_from_this()] {
      if (self->socket_closed_) return;
      int fd = self->socket().native_handle();
      tcp_info info{};
      socklen_t len = sizeof(info);
      if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0) {
        self->rtt_us_.store(info.tcpi_rtt, std::memory_order_relaxed);
        self->retrans_.store(info.tcpi_total_retrans, std::memory_order_relaxed);
      }
      int outq = 0;
      if (::ioctl(fd, SIOCOUTQ, &outq) == 0) self->outq_.store(outq, std::memory_order_relaxed);
    });
    k.unacked_bytes += static_cast<uint64_t>(std::max(0, outq_.load(std::memory_order_relaxed)));
    k.rtt_seconds = std::max(k.rtt_seconds, rtt_us_.load(std::memory_order_relaxed) * 1e-6);
    k.retransmits += retrans_.load(std::memory_order_relaxed);
  }
  bool closed() const { return queue_.closed(); }

 private:
  // Asio's transfer_all caps each read/write syscall at 64 KiB; asking for everything that is
  // left lets one syscall move a whole multi-MiB chunk (far fewer wakeups per byte).
  struct Everything {
    size_t total;
    size_t operator()(const boost::system::error_code& ec, size_t done) const {
      return ec ? 0 : total - done;
    }
  };
  template <typename Buffers, typename Handler>
  void AsyncRead(const Buffers& b, Handler&& h) {
    Everything all{asio::buffer_size(b)};
    if (tls_)
      asio::async_read(*tls_, b, all, std::forward<Handler>(h));
    else
      asio::async_read(*plain_, b, all, std::forward<Handler>(h));
  }
  template <typename Buffers, typename Handler>
  void AsyncWrite(const Buffers& b, Handler&& h) {
    Everything all{asio::buffer_size(b)};
    if (tls_)
      asio::async_write(*tls_, b, all, std::forward<Handler>(h));
    else
      asio::async_write(*plain_, b, all, std::forward<Handler>(h));
  }

  // Sender side: every queued frame is reported back exactly once (the window and the
  // bundle's borrowed-memory accounting depend on it). Receiver replies need no report.
  void Done(const OutFrame& f, bool ok) {
    if (tx_) tx_->OnFrameDone(f, ok);
  }

  void WriteNext() {
    auto next = queue_.Pop();
    if (!next) return;
    current_ = std::move(*next);
    std::array<asio::const_buffer, 2> bufs{
        asio::buffer(current_.frame.head),
        asio::buffer(current_.frame.payload.data(), current_.frame.payload.size())};
    AsyncWrite(bufs, [self = shared_from_this()](boost::system::error_code ec, size_t) {
      SendQueue::Item q = std::move(self->current_);
      self->Done(q.frame, !ec);
      if (ec) {
        self->DoClose(Unavailable("write to " + self->peer + " failed: " + ec.message()));
      } else if (q.close_after) {
        self->DoClose(Unavailable("closed after a fatal reply"));
      }
      self->WriteNext();
    });
  }

  void ReadHeader() {
    AsyncRead(asio::buffer(hdr_),
              [self = shared_from_this()](boost::system::error_code ec, size_t) {
                if (ec) return self->OnReadError(ec, /*mid_frame=*/false);
                self->OnHeader();
              });
  }

  void OnHeader() {
    auto h = wire::DecodeFrameHeader(hdr_);
    if (!h.ok()) return DoClose(h.status());
    h_ = *h;
    if (h_.version != kProtocolVersion) {
      if (rx_) {
        rx_->OnUnknownVersion(shared_from_this(), h_);  // answers, then the write closes us
      } else {
        DoClose(
            FailedPrecondition("receiver speaks protocol version " + std::to_string(h_.version)));
      }
      return;
    }
    if (h_.type == wire::FrameType::kData) {
      if (!rx_) return DoClose(Internal("DATA frame sent to a sender"));
      AsyncRead(asio::buffer(desc_),
                [self = shared_from_this()](boost::system::error_code ec, size_t) {
                  if (ec) return self->OnReadError(ec, true);
                  self->OnDesc();
                });
      return;
    }
    body_.resize(h_.body_len);
    AsyncRead(asio::buffer(body_),
              [self = shared_from_this()](boost::system::error_code ec, size_t) {
                if (ec) return self->OnReadError(ec, true);
                Status st;
                if (self->rx_)
                  st = self->rx_->OnControl(self, self->h_, self->body_);
                else if (self->tx_)
                  self->tx_->OnControl(self->h_, self->body_);
                if (!st.ok()) return self->DoClose(st);
                self->ReadHeader();
              });
  }

  void OnDesc() {
    auto d = wire::DecodeDataDesc(desc_, h_.body_len);
    if (!d.ok()) return DoClose(d.status());
    d_ = *d;
    target_ = rx_->BeginChunk(shared_from_this(), h_.ticket, d_);
    if (!target_.dst) {
      discard_left_ = d_.chunk_len;
      return Discard();
    }
    AsyncRead(asio::buffer(target_.dst, d_.chunk_len),
              [self = shared_from_this()](boost::system::error_code ec, size_t) {
                if (ec) {
                  self->target_ = {};
                  return self->OnReadError(ec, true);
                }
                self->rx_->EndChunk(self->h_.ticket, self->d_, std::move(self->target_));
                self->target_ = {};
                self->ReadHeader();
              });
  }

  // Skips the payload of a chunk whose session is gone (aborted tickets, late frames).
  void Discard() {
    if (discard_left_ == 0) return ReadHeader();
    if (scratch_.empty()) scratch_.resize(256 << 10);
    size_t n = std::min<size_t>(discard_left_, scratch_.size());
    AsyncRead(asio::buffer(scratch_.data(), n),
              [self = shared_from_this(), n](boost::system::error_code ec, size_t) {
                if (ec) return self->OnReadError(ec, true);
                self->discard_left_ -= n;
                self->Discard();
              });
  }

  void OnReadError(const boost::system::error_code& ec, bool mid_frame) {
    if (socket_closed_) return;
    std::string what = mid_frame ? "truncated frame from " + peer + " (" + ec.message() + ")"
                                 : "connection to " + peer + " closed: " + ec.message();
    DoClose(mid_frame ? DataLoss(what) : Unavailable(what));
  }

  void DoClose(const Status& reason) {
    bool first = false;
    auto dropped = queue_.Close(reason.message(), &first);
    if (!first) return;
    socket_closed_ = true;
    boost::system::error_code ec;
    socket().shutdown(tcp::socket::shutdown_both, ec);
    socket().close(ec);
    for (auto& q : dropped) Done(q.frame, false);
    if (rx_) rx_->OnConnectionLost(this, reason);
    if (tx_) tx_->OnLinkFailed(reason);
    if (on_closed_) on_closed_(this);
  }

  Executor strand_;
  std::unique_ptr<tcp::socket> plain_;
  std::unique_ptr<TlsStream> tls_;
  std::shared_ptr<SenderCore> tx_;
  std::shared_ptr<RxCore> rx_;
  std::function<void(Conn*)> on_closed_;

  SendQueue queue_;
  bool socket_closed_ = false;  // strand only
  SendQueue::Item current_;

  // Read state (strand only).
  std::array<std::byte, wire::kFrameHeaderSize> hdr_{};
  std::array<std::byte, wire::kDataDescSize> desc_{};
  wire::FrameHeader h_;
  wire::DataDesc d_;
  std::vector<std::byte> body_;
  internal::ChunkTarget target_;
  uint64_t discard_left_ = 0;
  std::vector<std::byte> scratch_;

  std::atomic<uint32_t> rtt_us_{0}, retrans_{0};
  std::atomic<int> outq_{0};
};

// An event loop with its threads; Stop() lets pending handlers finish, then joins.
class Loop {
 public:
  explicit Loop(int threads) : guard_(asio::make_work_guard(io_)) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~Loop() { Stop(); }
  void Stop() {
    guard_.reset();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

// ---- sender ----------------------------------------------------------------------------------

using TcpLink = internal::StripedLink<Conn>;

using TcpSender = internal::StreamSender<Loop>;

// ---- receiver --------------------------------------------------------------------------------

class TcpReceiver : public Receiver {
 public:
  TcpReceiver(TcpOptions options, std::shared_ptr<ssl::context> tls)
      : options_(std::move(options)),
        tls_(std::move(tls)),
        loop_(std::make_unique<Loop>(options_.io_threads)),
        acceptor_(asio::make_strand(loop_->io())) {}
  ~TcpReceiver() override { Shutdown(); }

  Status Listen(const std::string& host, uint16_t port, ReceiverCallbacks callbacks) {
    try {
      tcp::endpoint ep(asio::ip::make_address(host), port);
      acceptor_.open(ep.protocol());
      acceptor_.set_option(tcp::acceptor::reuse_address(true));
      // Set before listen() so accepted sockets inherit it (and the window scale fits it).
      if (options_.rcvbuf_bytes > 0)
        acceptor_.set_option(asio::socket_base::receive_buffer_size(options_.rcvbuf_bytes));
      acceptor_.bind(ep);
      acceptor_.listen();
      auto local = acceptor_.local_endpoint();
      address_ = local.address().to_string() + ":" + std::to_string(local.port());
    } catch (const boost::system::system_error& e) {
      return Unavailable("listen on " + host + ":" + std::to_string(port) + " failed: " + e.what());
    }
    core_ = std::make_shared<RxCore>(options_.common, std::move(callbacks), "tcp:" + address_);
    asio::post(acceptor_.get_executor(), [this] { Accept(); });
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
    if (core_) core_->Shutdown();  // sends ABORTs on live connections
    std::promise<void> closed;
    asio::post(acceptor_.get_executor(), [this, &closed] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      closed.set_value();
    });
    closed.get_future().wait();
    std::set<std::shared_ptr<Conn>> conns;
    {
      std::lock_guard lk(mu_);
      conns.swap(conns_);
    }
    for (auto& c : conns) c->Close(Unavailable("receiver shut down"));
    loop_->Stop();
  }

 private:
  void Accept() {
    acceptor_.async_accept(asio::make_strand(loop_->io()),
                           [this](boost::system::error_code ec, tcp::socket sock) {
                             if (ec) {
                               if (ec != asio::error::operation_aborted)
                                 spdlog::warn("transport: accept failed: {}", ec.message());
                               if (!acceptor_.is_open()) return;
                             } else {
                               OnAccepted(std::move(sock));
                             }
                             Accept();
                           });
  }

  void OnAccepted(tcp::socket sock) {
    SetSocketOptions(sock, options_);
    boost::system::error_code ec;
    auto remote = sock.remote_endpoint(ec);
    auto conn = std::make_shared<Conn>(std::move(sock), tls_);
    conn->peer = ec ? "?" : remote.address().to_string() + ":" + std::to_string(remote.port());
    conn->SetReceiver(core_, [this](Conn* c) {
      std::lock_guard lk(mu_);
      for (auto it = conns_.begin(); it != conns_.end(); ++it)
        if (it->get() == c) {
          conns_.erase(it);
          break;
        }
    });
    {
      std::lock_guard lk(mu_);
      if (shut_) return;
      conns_.insert(conn);
    }
    if (!conn->tls()) return conn->Start();
    conn->tls_stream().async_handshake(
        ssl::stream_base::server, [conn](boost::system::error_code hec) {
          if (hec) {
            spdlog::warn("transport: TLS handshake from {} failed: {}", conn->peer, hec.message());
            conn->Close(Unauthenticated("TLS handshake failed: " + hec.message()));
            return;
          }
          conn->Start();
        });
  }

  TcpOptions options_;
  std::shared_ptr<ssl::context> tls_;
  std::unique_ptr<Loop> loop_;
  tcp::acceptor acceptor_;
  std::shared_ptr<RxCore> core_;
  std::string address_;
  std::mutex mu_;
  bool shut_ = false;
  std::set<std::shared_ptr<Conn>> conns_;
};

}  // namespace

Result<std::unique_ptr<Receiver>> ListenTcp(const std::string& host, uint16_t port,
                                            const TcpOptions& options,
                                            ReceiverCallbacks callbacks) {
  if (!callbacks.on_commit) return InvalidArgument("on_commit callback is required");
  std::shared_ptr<ssl::context> tls;
  if (options.tls) {
    PRFAAS_ASSIGN_OR_RETURN(tls, MakeTlsContext(*options.tls, true));
  }
  auto r = std::make_unique<TcpReceiver>(options, tls);
  PRFAAS_RETURN_IF_ERROR(r->Listen(host, port, std::move(callbacks)));
  return std::unique_ptr<Receiver>(std::move(r));
}

Result<std::unique_ptr<Sender>> ConnectTcp(const std::string& host, uint16_t port,
                                           const TcpOptions& options) {
  if (options.connections < 1 || options.connections > 64)
    return InvalidArgument("connections must be in [1, 64]");
  std::shared_ptr<ssl::context> tls;
  if (options.tls) {
    PRFAAS_ASSIGN_OR_RETURN(tls, MakeTlsContext(*options.tls, false));
  }
  tcp::endpoint ep;
  try {
    ep = tcp::endpoint(asio::ip::make_address(host), port);
  } catch (const boost::system::system_error& e) {
    return InvalidArgument("bad receiver address '" + host + "': " + e.what());
  }
  const std::string peer = host + ":" + std::to_string(port);
  auto loop = std::make_unique<Loop>(options.io_threads);
  auto core = std::make_shared<SenderCore>(options.common, peer);
  std::vector<std::shared_ptr<Conn>> conns;
  for (int i = 0; i < options.connections; ++i) {
    tcp::socket sock(asio::make_strand(loop->io()));
    boost::system::error_code ec;
    sock.open(ep.protocol(), ec);
    if (ec) return Unavailable("socket: " + ec.message());
    SetSocketOptions(sock, options);  // before connect, so SO_RCVBUF shapes the window scale
    auto conn = std::make_shared<Conn>(std::move(sock), tls);
    const Executor strand = conn->strand();
    conn->peer = peer;
    // Connect (and handshake) asynchronously so the whole step honours connect_timeout.
    std::promise<boost::system::error_code> done;
    auto fut = done.get_future();
    asio::post(strand, [conn, ep, &done] {
      conn->socket().async_connect(ep, [conn, &done](boost::system::error_code cec) {
        if (cec || !conn->tls()) return done.set_value(cec);
        conn->tls_stream().async_handshake(
            ssl::stream_base::client,
            [&done](boost::system::error_code hec) { done.set_value(hec); });
      });
    });
    if (fut.wait_for(options.connect_timeout) != std::future_status::ready) {
      asio::post(strand, [conn] {
        boost::system::error_code ignored;
        conn->socket().close(ignored);
      });
      fut.wait();  // the close completes the pending operation promptly
      for (auto& c : conns) c->Close(Cancelled("connect failed"));
      return DeadlineExceeded("connecting to " + peer + " timed out");
    }
    if (auto cec = fut.get()) {
      for (auto& c : conns) c->Close(Cancelled("connect failed"));
      return Unavailable("connecting to " + peer + " failed: " + cec.message());
    }
    conn->SetSender(core);
    conns.push_back(std::move(conn));
  }
  core->AttachSink(std::make_shared<TcpLink>(conns));
  for (auto& c : conns) c->Start();
  return std::unique_ptr<Sender>(std::make_unique<TcpSender>(std::move(loop), core));
}

}  // namespace prfaas::transport
