#include "tests/e2e/cluster/topology.h"

#include "tests/e2e/transport/netns_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace prfaas::testing::e2e {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kIp = "/usr/sbin/ip";
constexpr const char* kNsPrefix = "prfaas_e2e_";

std::string CtlBinary() {
  return std::string(PRFAAS_BINARY_DIR) + "/router/ctl/prfaasctl";
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command; its stdout in `out` (if given). True on exit status 0.
bool Capture(const std::string& cmd, std::string* out) {
  FILE* f = popen((cmd + (out ? " 2>&1" : " >/dev/null 2>&1")).c_str(), "r");
  if (!f) return false;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    if (out) out->append(buf, n);
  }
  return pclose(f) == 0;
}

// Namespaces of earlier runs whose creating process is gone.
void RemoveStaleNamespaces() {
  std::string list;
  if (!Capture(std::string(kIp) + " netns list", &list)) return;
  std::istringstream in(list);
  for (std::string line; std::getline(in, line);) {
    std::string name = line.substr(0, line.find(' '));
    if (name.rfind(kNsPrefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + std::strlen(kNsPrefix), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      Capture(std::string(kIp) + " netns del " + name, nullptr);
    }
  }
}

std::string Dechunk(const std::string& body) {
  std::string out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t len = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
    if (len == 0) break;
    out += body.substr(eol + 2, len);
    pos = eol + 2 + len + 2;
  }
  return out;
}

}  // namespace

std::string Unavailable() {
  if (::geteuid() != 0) return "needs root (network namespaces, tc)";
  if (!fs::exists(kIp)) return "iproute2 (/usr/sbin/ip) is not installed";
  const std::string probe = std::string(kNsPrefix) + "probe_" + std::to_string(::getpid());
  if (!Capture(std::string(kIp) + " netns add " + probe, nullptr)) {
    return "`ip netns add` is not permitted here";
  }
  Capture(std::string(kIp) + " netns del " + probe, nullptr);
  if (!Capture("tc -V", nullptr)) return "tc (iproute2) is not available";
  return "";
}

// Entering a namespace is per thread (setns); the transport e2e helper does it on a fresh one.
bool RunInNetns(const std::string& ns, const std::function<void()>& fn) {
  return transport::testing::ShapedNetns::RunIn(ns, fn);
}

std::thread NetnsThread(const std::string& ns, std::function<void()> fn) {
  return std::thread([ns, fn = std::move(fn)] { RunInNetns(ns, fn); });
}

HttpExchange Http(const std::string& host, int port, const std::string& method,
                  const std::string& path, const std::string& body,
                  std::chrono::milliseconds deadline,
                  const std::function<void(const std::string&)>& on_body) {
  HttpExchange r;
  const auto t0 = Clock::now();
  const auto end = t0 + deadline;
  auto left_ms = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count()));
  };
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  auto finish = [&](const std::string& error) {
    ::close(fd);
    r.error = error;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    return finish(std::string("connect: ") + std::strerror(errno));
  }
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, left_ms()) != 1) return finish("connect: deadline");
  int soerr = 0;
  socklen_t len = sizeof soerr;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
  if (soerr != 0) return finish(std::string("connect: ") + std::strerror(soerr));
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + host +
                    "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  size_t off = 0;
  while (off < req.size()) {
    p = {fd, POLLOUT, 0};
    if (::poll(&p, 1, left_ms()) != 1) return finish("send: deadline");
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) return finish(std::string("send: ") + std::strerror(errno));
    if (n > 0) off += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[16384];
  size_t header_end = std::string::npos;
  for (;;) {
    p = {fd, POLLIN, 0};
    if (::poll(&p, 1, left_ms()) != 1) {
      r.body = raw;
      return finish("no complete reply within the deadline");
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN) continue;
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
    if (header_end == std::string::npos) header_end = raw.find("\r\n\r\n");
    if (on_body && header_end != std::string::npos) on_body(raw.substr(header_end + 4));
  }
  if (raw.size() < 12 || header_end == std::string::npos) return finish("malformed reply");
  r.status = std::atoi(raw.c_str() + 9);
  const std::string headers = raw.substr(0, header_end);
  r.body = raw.substr(header_end + 4);
  std::string lower = headers;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("transfer-encoding: chunked") != std::string::npos) r.body = Dechunk(r.body);
  return finish("");
}

double SumMetric(const std::string& exposition, const std::string& name,
                 const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream is(exposition);
  for (std::string line; std::getline(is, line);) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    const size_t close = line.rfind('}');
    const std::string set = next == '{' && close != std::string::npos
                                ? line.substr(name.size(), close - name.size())
                                : "";
    bool all = true;
    for (const auto& l : labels) all = all && set.find(l) != std::string::npos;
    if (all) sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

std::string UniquePrompt(int tokens) {
  static std::atomic<int> counter{0};
  static const std::string kText =
      " in the beginning god created the heaven and the earth. and the earth was without form, "
      "and void; and darkness was upon the face of the deep.";
  std::string s = "q" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ":";
  while (static_cast<int>(s.size()) < tokens) s += kText;
  s.resize(static_cast<size_t>(tokens));
  return s;
}

Topology::Topology(TopologyOptions options) : options_(std::move(options)) {}

Topology::~Topology() {
  // Router first, so no request is re-routed while the workers go away.
  for (auto& p : procs_) p->proc.reset();
  procs_.clear();
  if (created_prfaas_) Sh(std::string(kIp) + " netns del " + ns_prfaas_);
  if (created_pd_) Sh(std::string(kIp) + " netns del " + ns_pd_);
  if (!dir_.empty() && std::getenv("PRFAAS_E2E_KEEP_LOGS") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

bool Topology::Sh(const std::string& cmd) {
  return Capture(cmd, nullptr);
}

std::string Topology::Start() {
  RemoveStaleNamespaces();
  dir_ = MakeTempDir("prfaas-e2e-cluster-");
  if (dir_.empty()) return "mkdtemp failed";
  const std::string tag = std::to_string(::getpid());
  ns_prfaas_ = std::string(kNsPrefix) + tag + "_prfaas";
  ns_pd_ = std::string(kNsPrefix) + tag + "_pd";
  // Interface names are at most 15 characters.
  veth_prfaas_ = "pfx" + tag.substr(0, 10);
  veth_pd_ = "pdx" + tag.substr(0, 10);
  const std::string ip = kIp;
  bool ok = Sh(ip + " netns add " + ns_prfaas_) && (created_prfaas_ = true) &&
            Sh(ip + " netns add " + ns_pd_) && (created_pd_ = true) &&
            Sh(ip + " link add " + veth_prfaas_ + " type veth peer name " + veth_pd_) &&
            Sh(ip + " link set " + veth_prfaas_ + " netns " + ns_prfaas_) &&
            Sh(ip + " link set " + veth_pd_ + " netns " + ns_pd_) &&
            Sh(ip + " -n " + ns_prfaas_ + " addr add " + kPrfaasAddr + "/24 dev " + veth_prfaas_) &&
            Sh(ip + " -n " + ns_pd_ + " addr add " + kPdAddr + "/24 dev " + veth_pd_) &&
            Sh(ip + " -n " + ns_prfaas_ + " link set lo up") &&
            Sh(ip + " -n " + ns_pd_ + " link set lo up") &&
            Sh(ip + " -n " + ns_prfaas_ + " link set " + veth_prfaas_ + " up") &&
            Sh(ip + " -n " + ns_pd_ + " link set " + veth_pd_ + " up") &&
            Sh("tc -n " + ns_prfaas_ + " qdisc add dev " + veth_prfaas_ + " root tbf rate " +
               options_.rate + " burst 64kb latency 200ms");
  if (!ok) return "could not build the namespaces, veth pair and tbf qdisc";

  const std::string model = std::string(PRFAAS_SOURCE_DIR) + "/models/kjv-tiny";
  const std::string registry = std::string(kPdAddr) + ":" + std::to_string(kRegistryPort);
  std::vector<std::string> router_args = {
      "router", "--http.address", "0.0.0.0", "--http.port", std::to_string(kHttpPort),
      "--grpc.address", "0.0.0.0", "--admin.port", std::to_string(kAdminPort), "--registry.port",
      std::to_string(kRegistryPort), "--model", "kjv-tiny", "--policy", "prfaas",
      "--threshold.base", std::to_string(options_.threshold_tokens), "--links",
      "prfaas:pd:" + std::to_string(kLinkGbps),
      // Short, bounded timing so failures are detected (and tested) in seconds.
      "--heartbeat.interval_ms", "250", "--heartbeat.timeout_ms", "1500", "--failure.cooldown_ms",
      "3000", "--timeouts.ticket_ms", "10000", "--timeouts.prefill_ms", "15000",
      "--timeouts.token_idle_ms", "10000"};
  router_args.insert(router_args.end(), options_.extra_router_args.begin(),
                     options_.extra_router_args.end());
  std::string err = StartProcess("router", ns_pd_, router_args, /*worker=*/false);
  if (!err.empty()) return err;

  struct W {
    const char *name, *role, *cluster, *kind;
    bool prfaas_ns;
  };
  const W workers[] = {{"prfaas-prefill-0", "prefill", "prfaas", "prfaas", true},
                       {"pd-prefill-0", "prefill", "pd", "pd", false},
                       {"pd-decode-0", "decode", "pd", "pd", false},
                       {"pd-decode-1", "decode", "pd", "pd", false}};
  for (const W& w : workers) {
    std::vector<std::string> args = {"worker",
                                     "--role",
                                     w.role,
                                     "--cluster",
                                     w.cluster,
                                     "--cluster-kind",
                                     w.kind,
                                     "--model",
                                     model,
                                     "--worker-id",
                                     w.name,
                                     "--host",
                                     w.prfaas_ns ? kPrfaasAddr : kPdAddr,
                                     "--router",
                                     registry,
                                     "--transfer-timeout-seconds",
                                     "20",
                                     "--drain-deadline-seconds",
                                     "2"};
    err = StartProcess(w.name, w.prfaas_ns ? ns_prfaas_ : ns_pd_, args, /*worker=*/true);
    if (!err.empty()) return err;
  }
  if (!WaitHealthyWorkers(4, std::chrono::seconds(30))) {
    return "the router does not report 4 healthy workers within 30 s\n" + Logs();
  }
  return "";
}

std::string Topology::StartProcess(const std::string& name, const std::string& ns,
                                   const std::vector<std::string>& prfaas_args, bool worker) {
  auto p = std::make_unique<Proc>();
  p->name = name;
  p->ns = ns;
  p->addr = ns == ns_prfaas_ ? kPrfaasAddr : kPdAddr;
  p->args = prfaas_args;
  const std::string ready = dir_ + "/" + name + ".ready.json";
  std::error_code ec;
  fs::remove(ready, ec);
  std::vector<std::string> args = {"netns", "exec", ns, PrfaasBinary()};
  args.insert(args.end(), prfaas_args.begin(), prfaas_args.end());
  if (worker) {
    args.push_back("--ready-file");
    args.push_back(ready);
  }
  p->proc = std::make_unique<ChildProcess>(kIp, args, dir_ + "/" + name + ".log");
  if (worker) {
    auto j = WaitForReadyFile(ready, std::chrono::seconds(60), p->proc.get());
    if (!j)
      return name + " did not become ready: " + p->proc->Describe() + "\n" + p->proc->LogTail(20);
    p->ready = *j;
  } else {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    for (;;) {
      HttpExchange h;
      RunInNetns(ns, [&] {
        h = Http("127.0.0.1", kHttpPort, "GET", "/health", "", std::chrono::seconds(2));
      });
      if (h.status != 0) break;
      if (!p->proc->Running() || Clock::now() > deadline) {
        return name + " does not answer HTTP: " + p->proc->Describe() + "\n" + p->proc->LogTail(20);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // A restart replaces the old entry (same name).
  for (auto& q : procs_) {
    if (q->name == name) {
      q = std::move(p);
      return "";
    }
  }
  procs_.push_back(std::move(p));
  return "";
}

bool Topology::SetRate(const std::string& rate) {
  return Sh("tc -n " + ns_prfaas_ + " qdisc change dev " + veth_prfaas_ + " root tbf rate " + rate +
            " burst 64kb latency 200ms");
}

bool Topology::SetLinkUp(bool up) {
  return Sh(std::string(kIp) + " -n " + ns_prfaas_ + " link set " + veth_prfaas_ +
            (up ? " up" : " down"));
}

Topology::Proc& Topology::worker(const std::string& name) {
  for (auto& p : procs_) {
    if (p->name == name) return *p;
  }
  throw std::out_of_range("no process " + name);
}

std::vector<Topology::Proc*> Topology::processes() {
  std::vector<Proc*> out;
  for (auto& p : procs_) out.push_back(p.get());
  return out;
}

HttpExchange Topology::Completion(const std::string& prompt, int max_tokens,
                                  std::chrono::milliseconds deadline, bool stream,
                                  const std::function<void(const std::string&)>& on_body) {
  nlohmann::json req = {{"model", "kjv-tiny"}, {"prompt", prompt}, {"max_tokens", max_tokens},
                        {"temperature", 0.0},  {"stream", stream}, {"ignore_eos", true}};
  HttpExchange h;
  h.error = "could not enter the PD namespace";
  RunInNetns(ns_pd_, [&] {
    h = Http("127.0.0.1", kHttpPort, "POST", "/v1/completions", req.dump(), deadline, on_body);
  });
  return h;
}

std::string Topology::RouterMetrics() {
  HttpExchange h;
  RunInNetns(ns_pd_, [&] {
    h = Http("127.0.0.1", kHttpPort, "GET", "/metrics", "", std::chrono::seconds(5));
  });
  return h.body;
}

std::string Topology::WorkerMetrics(const std::string& name) {
  Proc& w = worker(name);
  HttpExchange h;
  // Scraped from the PD namespace; the PrfaaS worker is reached across the link.
  RunInNetns(ns_pd_, [&] {
    h = Http(w.addr, w.http_port(), "GET", "/metrics", "", std::chrono::seconds(5));
  });
  return h.body;
}

std::optional<nlohmann::json> Topology::Ctl(const std::vector<std::string>& args,
                                            std::string* error) {
  std::string cmd = std::string(kIp) + " netns exec " + ns_pd_ + " " + CtlBinary() +
                    " --router 127.0.0.1:" + std::to_string(kAdminPort) + " --timeout 5 -o json";
  for (const auto& a : args) cmd += " " + ShellQuote(a);
  std::string out;
  if (!Capture(cmd, &out)) {
    if (error) *error = out;
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) {
    if (error) *error = "not JSON: " + out;
    return std::nullopt;
  }
  return j;
}

int Topology::HealthyWorkers() {
  auto j = Ctl({"workers"});
  if (!j || !j->contains("workers")) return -1;
  int n = 0;
  for (const auto& w : (*j)["workers"]) n += w.value("state", "") == "up" ? 1 : 0;
  return n;
}

bool Topology::WaitHealthyWorkers(int n, std::chrono::milliseconds deadline) {
  const auto end = Clock::now() + deadline;
  while (Clock::now() < end) {
    if (HealthyWorkers() == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string Topology::Logs(int lines) {
  std::string out;
  for (auto& p : procs_) {
    out += "--- " + p->name + " (" + p->proc->Describe() + "):\n" + p->proc->LogTail(lines);
  }
  return out;
}

}  // namespace prfaas::testing::e2e
