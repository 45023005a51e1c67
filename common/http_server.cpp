#include "common/http_server.h"

#include <spdlog/spdlog.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <chrono>

namespace prfaas::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

using RouteMap = std::map<std::string, std::map<std::string, Handler>>;  // path -> method -> h

Response Dispatch(const RouteMap& routes, const Request& req) {
  auto it = routes.find(req.path);
  if (it == routes.end()) return {404, "text/plain; charset=utf-8", "not found\n", {}};
  auto m = it->second.find(req.method);
  if (m == it->second.end()) m = it->second.find("*");
  if (m == it->second.end()) {
    Response r{405, "text/plain; charset=utf-8", "method not allowed\n", {}};
    std::string allow;
    for (const auto& [method, h] : it->second) allow += (allow.empty() ? "" : ", ") + method;
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  return m->second(req);
}

// One keep-alive connection: read a request, dispatch, write the response, repeat.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const RouteMap& routes, size_t max_body)
      : stream_(std::move(socket)), routes_(routes), max_body_(max_body) {}

  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(max_body_);
    stream_.expires_after(std::chrono::seconds(60));
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      Reply(Response{413, "text/plain; charset=utf-8", "request body too large\n", {}}, false, 11);
      return;
    }
    if (ec) return;  // closed, timed out or malformed: drop the connection
    auto msg = parser_->release();
    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& f : msg) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      req.headers[name] = std::string(f.value());
    }
    req.body = std::move(msg.body());
    Response resp;
    try {
      resp = Dispatch(routes_, req);
    } catch (const std::exception& e) {
      spdlog::error("http handler for {} threw: {}", req.path, e.what());
      resp = Response{500, "text/plain; charset=utf-8", "internal error\n", {}};
    }
    Reply(std::move(resp), msg.keep_alive(), msg.version());
  }

  void Reply(Response r, bool keep_alive, unsigned version) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(r.status), version);
    res->set(bhttp::field::server, "prfaas");
    res->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
                         if (ec || !keep_alive) {
                           beast::error_code ignored;
                           self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                           return;
                         }
                         self->Read();
                       });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  const RouteMap& routes_;
  size_t max_body_;
};

}  // namespace

class Server::Impl {
 public:
  explicit Impl(Options o) : options(std::move(o)), acceptor(io) {}

  void Accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket s) {
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
      } else {
        std::make_shared<Session>(std::move(s), routes, options.max_body_bytes)->Start();
      }
      Accept();
    });
  }

  Options options;
  RouteMap routes;
  asio::io_context io;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  bool started = false;
};

Server::Server(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  Stop();
}

void Server::Handle(const std::string& method, const std::string& path, Handler handler) {
  impl_->routes[path][method] = std::move(handler);
}

Status Server::Start() {
  if (impl_->started) return FailedPrecondition("http server already started");
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->options.bind_address, ec);
  if (ec) {
    return InvalidArgument("invalid bind address '" + impl_->options.bind_address +
                           "': " + ec.message());
  }
  if (impl_->options.port < 0 || impl_->options.port > 65535) {
    return InvalidArgument("invalid port " + std::to_string(impl_->options.port));
  }
  tcp::endpoint ep(addr, static_cast<unsigned short>(impl_->options.port));
  std::string where = impl_->options.bind_address + ":" + std::to_string(impl_->options.port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (ec) {
    impl_->acceptor.close();
    return Unavailable(
        "cannot listen on " + where + ": " + ec.message() +
        (ec == asio::error::address_in_use ? " (is another process using it?)" : ""));
  }
  impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable("cannot listen on " + where + ": " + ec.message());
  port_ = impl_->acceptor.local_endpoint().port();
  impl_->started = true;
  impl_->Accept();
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->io.run(); });
  }
  return Status::Ok();
}

void Server::Stop() {
  if (!impl_ || !impl_->started) return;
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  beast::error_code ec;
  impl_->acceptor.close(ec);
  impl_->started = false;
}

void HealthState::SetReady(bool ready, std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  reason_ = std::move(reason);
  ready_.store(ready);
  if (metrics::Gauge* g = gauge_.load()) g->Set(ready ? 1 : 0);
}

void HealthState::ExportTo(metrics::Registry& registry) {
  std::lock_guard<std::mutex> lock(mu_);
  metrics::Gauge& g =
      registry.Gauge("prfaas_health_status", "1 when /health answers 200 (ready), else 0.").Get();
  g.Set(ready_.load() ? 1 : 0);
  gauge_.store(&g);
}

namespace {
// Taken when the program is loaded, i.e. at process start.
const double kProcessStart =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}  // namespace

void RegisterProcessMetrics(metrics::Registry& registry, HealthState& health) {
  registry.Gauge("prfaas_build_info", "Always 1; identifies the build.", {"version", "revision"})
      .WithLabels({PRFAAS_VERSION, PRFAAS_REVISION})
      .Set(1);
  registry.Gauge("prfaas_process_start_time_seconds", "Process start time (Unix seconds).")
      .Get()
      .Set(kProcessStart);
  health.ExportTo(registry);
}

std::string HealthState::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

void AddObservabilityRoutes(Server& server, const metrics::Registry& registry,
                            const HealthState& health) {
  server.Handle("GET", "/metrics", [&registry](const Request&) {
    return Response{200, "text/plain; version=0.0.4; charset=utf-8", registry.Render(), {}};
  });
  server.Handle("GET", "/health", [&health](const Request&) {
    if (health.ready()) return Response{200, "text/plain; charset=utf-8", "ok\n", {}};
    std::string why = health.reason();
    return Response{503,
                    "text/plain; charset=utf-8",
                    "not ready" + (why.empty() ? std::string() : ": " + why) + "\n",
                    {}};
  });
  server.Handle("GET", "/health/live", [](const Request&) {
    return Response{200, "text/plain; charset=utf-8", "alive\n", {}};
  });
}

}  // namespace prfaas::http
