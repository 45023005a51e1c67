// prfaas_bench_transport: KV transport throughput and latency.
//
//   prfaas_bench_transport [--gib N] [--conns 1,2,4,8] [--backend tcp|ucx|both] [--no-tls]
//                          [--no-iperf] [--io-threads N] [--netns RATE]
//
// 1. Loopback throughput: bundles of --gib GiB in 4 MiB segments over 1/2/4/8 connections (steady
//    state: receive-buffer pool sized to the bundle, one warm-up bundle, median of three),
//    plaintext and mutual TLS (tcp backend), the UCX backend over UCX's tcp transport on lo
//    (--backend ucx|both; N endpoints), next to `iperf3 -P N` on 127.0.0.1 at the same N.
// 2. Small-bundle latency: Begin..Commit (ACK received) for 64 KiB bundles, p50/p99.
// 3. --netns RATE (root): 2 GiB across two namespaces joined by a veth shaped with tbf at RATE;
//    goodput as a share of the rate.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "tests/e2e/transport/netns_util.h"
#include "tests/unit/transport/test_util.h"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace pt = prfaas::transport;
using Clock = std::chrono::steady_clock;

namespace {

struct Endpoints {
  pt::testing::Collector got;
  std::unique_ptr<pt::Receiver> rx;
  std::unique_ptr<pt::Sender> tx;
};

bool Open(Endpoints& e, const pt::TcpOptions& rxo, const pt::TcpOptions& txo,
          const std::string& host = "127.0.0.1", const std::string& rx_ns = "",
          const std::string& tx_ns = "") {
  pt::ReceiverCallbacks cb;
  cb.on_commit = [&e](pt::Bundle&&) {  // drop at once: frees the buffers
    std::lock_guard lk(e.got.mu);
    e.got.bundles.emplace_back();
    e.got.cv.notify_all();
  };
  auto listen = [&] {
    auto r = pt::ListenTcp(host, 0, rxo, cb);
    if (r.ok())
      e.rx = std::move(r).value();
    else
      std::fprintf(stderr, "listen: %s\n", r.status().ToString().c_str());
  };
  if (rx_ns.empty())
    listen();
  else
    pt::testing::ShapedNetns::RunIn(rx_ns, listen);
  if (!e.rx) return false;
  auto port =
      static_cast<uint16_t>(std::stoi(e.rx->address().substr(e.rx->address().rfind(':') + 1)));
  auto connect = [&] {
    auto s = pt::ConnectTcp(host, port, txo);
    if (s.ok())
      e.tx = std::move(s).value();
    else
      std::fprintf(stderr, "connect: %s\n", s.status().ToString().c_str());
  };
  if (tx_ns.empty())
    connect();
  else
    pt::testing::ShapedNetns::RunIn(tx_ns, connect);
  return e.tx != nullptr;
}

// Loopback pair through the backend factory (transport/endpoint.h).
bool OpenLoopback(Endpoints& e, pt::Backend backend, const pt::EndpointOptions& o) {
  pt::ReceiverCallbacks cb;
  cb.on_commit = [&e](pt::Bundle&&) {
    std::lock_guard lk(e.got.mu);
    e.got.bundles.emplace_back();
    e.got.cv.notify_all();
  };
  auto r = pt::Listen(backend, "127.0.0.1", 0, o, cb);
  if (!r.ok()) {
    std::fprintf(stderr, "listen: %s\n", r.status().ToString().c_str());
    return false;
  }
  e.rx = std::move(r).value();
  auto s = pt::Connect(e.rx->address(), o);
  if (!s.ok()) {
    std::fprintf(stderr, "connect: %s\n", s.status().ToString().c_str());
    return false;
  }
  e.tx = std::move(s).value();
  return true;
}

// Sends one bundle of `total` bytes in `seg` segments; returns seconds (negative on failure).
double SendBundle(Endpoints& e, uint64_t total, uint64_t seg, const std::vector<std::byte>& src) {
  pt::TicketSpec spec;
  spec.budget_bytes = total;
  spec.model_fingerprint = 1;
  spec.idle_timeout = std::chrono::seconds(30);
  pt::Ticket t = e.rx->IssueTicket(spec);
  const uint64_t segs = (total + seg - 1) / seg;
  const int layers = static_cast<int>(std::min<uint64_t>(segs, 64));
  auto start = Clock::now();
  auto b = e.tx->Begin(pt::testing::MakeHeader(t, 1, layers), t);
  if (!b.ok()) {
    std::fprintf(stderr, "begin: %s\n", b.status().ToString().c_str());
    return -1;
  }
  for (uint64_t i = 0; i < segs; ++i) {
    const uint64_t n = std::min(seg, total - i * seg);
    const std::byte* p = src.data() + (i * seg) % (src.size() - n + 1);
    uint32_t layer = static_cast<uint32_t>(i * layers / segs);
    prfaas::Status st = (*b)->Append({layer, pt::SegmentKind::kAttnKv, 0, 1, false}, {p, n});
    if (!st.ok()) {
      std::fprintf(stderr, "append: %s\n", st.ToString().c_str());
      return -1;
    }
  }
  prfaas::Status st = (*b)->Commit();
  if (!st.ok()) {
    std::fprintf(stderr, "commit: %s\n", st.ToString().c_str());
    return -1;
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Steady state, as on a receiver that has been serving for a while: one full-size warm-up bundle
// fills the receive-buffer pool (main() sizes it to the bundle), then the median of three timed
// bundles in Gbit/s, or -1 if any failed.
double SteadyGbps(Endpoints& e, uint64_t total, uint64_t seg, const std::vector<std::byte>& src) {
  if (SendBundle(e, total, seg, src) < 0) return -1;
  std::vector<double> s;
  for (int i = 0; i < 3; ++i) {
    double t = SendBundle(e, total, seg, src);
    if (t < 0) return -1;
    s.push_back(t);
  }
  std::sort(s.begin(), s.end());
  return static_cast<double>(total) * 8 / s[1] / 1e9;
}

// A port nobody listens on right now (bind to 0, read it back, release it).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 5201;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// iperf3 -P n on loopback for `secs` seconds after one omitted warm-up second; Gbit/s received, or
// -1.
double Iperf(int n, int secs) {
  const int port = FreePort();
  std::string server =
      "iperf3 -s -1 -B 127.0.0.1 -p " + std::to_string(port) + " >/dev/null 2>&1 &";
  if (std::system(server.c_str()) != 0) return -1;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::string client = "iperf3 -J -c 127.0.0.1 -p " + std::to_string(port) + " -P " +
                       std::to_string(n) + " -O 1 -t " + std::to_string(secs) + " 2>/dev/null";
  FILE* f = popen(client.c_str(), "r");
  if (!f) return -1;
  std::string out;
  char buf[4096];
  while (size_t k = fread(buf, 1, sizeof buf, f)) out.append(buf, k);
  pclose(f);
  try {
    auto j = nlohmann::json::parse(out);
    return j["end"]["sum_received"]["bits_per_second"].get<double>() / 1e9;
  } catch (...) {
    return -1;
  }
}

bool MakeCerts(const std::filesystem::path& dir) {
  auto run = [&](const std::string& cmd) {
    return std::system(("cd '" + dir.string() + "' && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  };
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  if (!run("openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 1 -subj /CN=ca"))
    return false;
  for (std::string l : {"server", "client"})
    if (!run("openssl req " + key + " -keyout " + l + ".key -out " + l + ".csr -subj /CN=" + l) ||
        !run("openssl x509 -req -in " + l + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out " +
             l + ".pem -days 1"))
      return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 1;
  std::vector<int> conns = {1, 2, 4, 8};
  bool tls = true, iperf = true, tcp = true, ucx = false;
  int io_threads = 1;
  std::string netns_rate;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc)
      gib = std::atof(argv[++i]);
    else if (a == "--conns" && i + 1 < argc) {
      conns.clear();
      std::stringstream ss(argv[++i]);
      for (std::string x; std::getline(ss, x, ',');) conns.push_back(std::stoi(x));
    } else if (a == "--backend" && i + 1 < argc) {
      std::string b = argv[++i];
      tcp = b == "tcp" || b == "both";
      ucx = b == "ucx" || b == "both";
      if (!tcp && !ucx) {
        std::fprintf(stderr, "--backend takes tcp, ucx or both\n");
        return 2;
      }
    } else if (a == "--no-tls")
      tls = false;
    else if (a == "--io-threads" && i + 1 < argc)
      io_threads = std::max(1, std::atoi(argv[++i]));
    else if (a == "--no-iperf")
      iperf = false;
    else if (a == "--netns" && i + 1 < argc)
      netns_rate = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--gib N] [--conns 1,2,4,8] [--backend tcp|ucx|both] [--no-tls] "
                   "[--no-iperf] [--io-threads N] [--netns RATE]\n",
                   argv[0]);
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  const uint64_t total = static_cast<uint64_t>(gib * (1ull << 30)), seg = 4ull << 20;
  const auto src = pt::testing::RandomBytes(256 << 20);
  // A receiver that expects bundles this large keeps that much receive buffer around.
  pt::SetReceiveBufferPoolBytes(std::max<uint64_t>(total, 256ull << 20));
  std::printf("cpus: %u\n", std::thread::hardware_concurrency());

  auto tmp = std::filesystem::temp_directory_path() / ("prfaas-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(tmp);
  if (tls && !MakeCerts(tmp)) {
    std::fprintf(stderr, "openssl failed; skipping TLS\n");
    tls = false;
  }
  auto tls_opts = [&](const char* leaf) {
    return pt::TlsOptions{(tmp / (std::string(leaf) + ".pem")).string(),
                          (tmp / (std::string(leaf) + ".key")).string(), (tmp / "ca.pem").string()};
  };

  std::printf(
      "\n== loopback throughput: %.2f GiB bundles, 4 MiB segments, tcp io threads %d, "
      "receive-buffer pool %.0f MiB; median of 3 after a warm-up bundle ==\n",
      gib, io_threads, std::max<uint64_t>(total, 256ull << 20) / 1048576.0);
  std::printf("%-6s %12s %12s %12s %12s %10s %10s %10s\n", "conns", "prfaas_Gbps", "tls_Gbps",
              "ucx_Gbps", "iperf3_Gbps", "vs_iperf", "tls/plain", "ucx/iperf");
  if (!tcp) tls = false;
  for (int n : conns) {
    pt::TcpOptions o;
    o.connections = n;
    o.io_threads = io_threads;
    double plain = -1, secure = -1, ip = -1, over_ucx = -1;
    if (tcp) {
      Endpoints e;
      if (Open(e, o, o)) {
        plain = SteadyGbps(e, total, seg, src);
      }
    }
    if (tls) {
      pt::TcpOptions rxo = o, txo = o;
      rxo.tls = tls_opts("server");
      txo.tls = tls_opts("client");
      Endpoints e;
      if (Open(e, rxo, txo)) {
        secure = SteadyGbps(e, total, seg, src);
      }
    }
    if (ucx) {
      pt::EndpointOptions eo;
      eo.ucx.connections = n;
      eo.ucx.transports = "tcp,self";  // loopback only: UCX's tcp transport on lo
      eo.ucx.net_devices = "lo";
      Endpoints e;
      if (OpenLoopback(e, pt::Backend::kUcx, eo)) {
        over_ucx = SteadyGbps(e, total, seg, src);
      }
    }
    if (iperf) ip = Iperf(n, 3);
    std::printf("%-6d %12.2f %12.2f %12.2f %12.2f %9.0f%% %9.0f%% %9.0f%%\n", n, plain, secure,
                over_ucx, ip, ip > 0 && plain > 0 ? plain / ip * 100 : 0,
                secure > 0 && plain > 0 ? secure / plain * 100 : 0,
                ip > 0 && over_ucx > 0 ? over_ucx / ip * 100 : 0);
    std::fflush(stdout);
  }

  if (tcp) {
    std::printf("\n== small-bundle latency: 64 KiB bundles, 1 connection, plaintext ==\n");
    pt::TcpOptions o;
    o.connections = 1;
    Endpoints e;
    if (Open(e, o, o)) {
      std::vector<double> us;
      for (int i = 0; i < 1000; ++i) {
        double s = SendBundle(e, 64 << 10, 64 << 10, src);
        if (s > 0) us.push_back(s * 1e6);
      }
      std::sort(us.begin(), us.end());
      if (!us.empty())
        std::printf("n=%zu p50=%.0f us p90=%.0f us p99=%.0f us\n", us.size(), us[us.size() / 2],
                    us[us.size() * 9 / 10], us[us.size() * 99 / 100]);
    }
  }

  if (!netns_rate.empty()) {
    std::printf("\n== shaped link: 2 GiB across veth, tbf rate %s, 4 connections ==\n",
                netns_rate.c_str());
    if (!pt::testing::ShapedNetns::Available()) {
      std::printf("skipped: needs root and ip netns\n");
    } else {
      pt::testing::ShapedNetns net(netns_rate);
      pt::TcpOptions o;
      o.connections = 4;
      Endpoints e;
      if (net.ok() && Open(e, o, o, net.addr_b(), net.ns_b(), net.ns_a())) {
        double s = SendBundle(e, 2ull << 30, seg, src);
        double gbps = s > 0 ? (2ull << 30) * 8 / s / 1e9 : -1;
        double rate = std::atof(netns_rate.c_str()) *
                      (netns_rate.find('g') != std::string::npos ? 1 : 1e-3);  // gbit or mbit
        std::printf("goodput %.3f Gbit/s = %.1f%% of %s (%.2f s), retransmits %llu\n", gbps,
                    gbps / rate * 100, netns_rate.c_str(), s,
                    static_cast<unsigned long long>(e.tx->Stats().retransmits));
      } else {
        std::printf("namespace setup failed\n");
      }
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  return 0;
}
