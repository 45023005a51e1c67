#include "common/http_server.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace prfaas::http {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
};

// A real HTTP client over a real loopback socket.
Reply Fetch(int port, bhttp::verb method, const std::string& target, std::string body = {}) {
  asio::io_context io;
  boost::beast::tcp_stream stream(io);
  stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req(method, target, 11);
  req.set(bhttp::field::host, "localhost");
  req.body() = std::move(body);
  req.prepare_payload();
  bhttp::write(stream, req);
  boost::beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  boost::beast::error_code ec;
  bhttp::read(stream, buf, res, ec);
  Reply r;
  if (ec) return r;
  r.status = res.result_int();
  r.body = res.body();
  r.content_type = std::string(res[bhttp::field::content_type]);
  return r;
}

TEST(HttpServerTest, ServesMetricsAndHealth) {
  metrics::Registry reg;
  reg.Counter("prfaas_test_hits_total", "Hits.").Get().Inc(3);
  HealthState health;
  Server server({.bind_address = "127.0.0.1", .port = 0});
  AddObservabilityRoutes(server, reg, health);
  ASSERT_TRUE(server.Start().ok());
  ASSERT_GT(server.port(), 0);

  Reply m = Fetch(server.port(), bhttp::verb::get, "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("prfaas_test_hits_total 3"), std::string::npos);
  EXPECT_NE(m.content_type.find("version=0.0.4"), std::string::npos);

  Reply h = Fetch(server.port(), bhttp::verb::get, "/health");
  EXPECT_EQ(h.status, 503);
  EXPECT_NE(h.body.find("starting"), std::string::npos);
  health.SetReady(true);
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::get, "/health").status, 200);
  health.SetReady(false, "draining");
  h = Fetch(server.port(), bhttp::verb::get, "/health");
  EXPECT_EQ(h.status, 503);
  EXPECT_NE(h.body.find("draining"), std::string::npos);
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::get, "/health/live").status, 200);
}

TEST(HttpServerTest, RoutingErrorsAndQuery) {
  Server server({.port = 0});
  server.Handle("POST", "/echo", [](const Request& r) {
    return Response{
        200, "text/plain", r.method + " " + r.path + " q=" + r.query + " " + r.body, {}};
  });
  ASSERT_TRUE(server.Start().ok());
  Reply r = Fetch(server.port(), bhttp::verb::post, "/echo?x=1", "hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /echo q=x=1 hello");
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::get, "/echo").status, 405);
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::get, "/nope").status, 404);
}

TEST(HttpServerTest, OversizedBodyGets413) {
  Server server({.port = 0, .max_body_bytes = 16});
  server.Handle("POST", "/x", [](const Request&) { return Response{}; });
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::post, "/x", std::string(100, 'a')).status, 413);
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::post, "/x", "small").status, 200);
}

TEST(HttpServerTest, HandlerExceptionBecomes500) {
  Server server({.port = 0});
  server.Handle("GET", "/boom", [](const Request&) -> Response { throw std::runtime_error("x"); });
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(Fetch(server.port(), bhttp::verb::get, "/boom").status, 500);
}

TEST(HttpServerTest, BusyPortIsAClearError) {
  Server a({.port = 0});
  ASSERT_TRUE(a.Start().ok());
  Server b({.port = a.port()});
  Status st = b.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find(std::to_string(a.port())), std::string::npos) << st;
  Server c({.bind_address = "not-an-ip", .port = 0});
  EXPECT_EQ(c.Start().code(), StatusCode::kInvalidArgument);
}

TEST(HttpServerTest, StopIsIdempotentAndReleasesPort) {
  auto s = std::make_unique<Server>(Server::Options{.port = 0});
  ASSERT_TRUE(s->Start().ok());
  int port = s->port();
  s->Stop();
  s->Stop();
  s.reset();
  Server again({.port = port});
  EXPECT_TRUE(again.Start().ok());
}

}  // namespace
}  // namespace prfaas::http
