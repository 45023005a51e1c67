// The two-cluster topology of the cluster e2e tests, as real processes in two network namespaces.
//
//   namespace "prfaas" (10.77.0.1)              namespace "pd" (10.77.0.2)
//     prfaas-prefill-0  ── veth, tbf-shaped ──▶   router (HTTP 8000, admin 8001, registry 8002)
//                          (the cross-DC link)     pd-prefill-0, pd-decode-0, pd-decode-1
//
// The PrfaaS side's veth egress (KV bundles towards the PD cluster) is shaped with `tc tbf`;
// SetRate() changes the rate in place, SetLinkUp() cuts or restores the link. Loopback is up in
// both namespaces. Processes are started with `ip netns exec` (which execs, so the pid is the
// process itself and kill -9 reaches it). Everything is torn down in the destructor: processes
// are SIGKILLed (Subprocess), namespaces deleted (which deletes the veth). Namespaces left by a
// run that was itself killed are removed by the next run (the name carries the creating pid).
// Needs root and `ip netns`; Unavailable() says why not.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.h"

namespace prfaas::testing::e2e {

// Why the e2e cluster tests cannot run here ("" when they can).
std::string Unavailable();

// Runs `fn` on a fresh thread that entered network namespace `ns` (sockets it opens live there)
// and waits for it. False when the namespace could not be entered.
bool RunInNetns(const std::string& ns, const std::function<void()>& fn);
// A thread that enters `ns` first; fn does not run if that fails.
std::thread NetnsThread(const std::string& ns, std::function<void()> fn);

// One HTTP/1.1 exchange (Connection: close) with an overall deadline; status 0 when the connection
// failed or the deadline passed (then `error` says which). Chunked bodies are de-chunked.
// on_body, if set, sees the body bytes received so far after every read.
struct HttpExchange {
  int status = 0;
  std::string body;
  std::string error;
  double seconds = 0;
};
HttpExchange Http(const std::string& host, int port, const std::string& method,
                  const std::string& path, const std::string& body,
                  std::chrono::milliseconds deadline,
                  const std::function<void(const std::string&)>& on_body = {});

// Sum of every sample of `name` whose label set contains all of `labels` (substrings such as
// `path="prfaas"`) in a Prometheus text exposition; 0 when none.
double SumMetric(const std::string& exposition, const std::string& name,
                 const std::vector<std::string>& labels = {});

struct TopologyOptions {
  std::string rate = "1gbit";  // tbf rate of the PrfaaS -> PD direction
  int threshold_tokens = 600;  // router threshold.base (t0); the controller clamps t to >= 512
  std::vector<std::string> extra_router_args;
};

class Topology {
 public:
  static constexpr const char* kPrfaasAddr = "10.77.0.1";
  static constexpr const char* kPdAddr = "10.77.0.2";
  static constexpr int kHttpPort = 8000, kAdminPort = 8001, kRegistryPort = 8002;
  static constexpr double kLinkGbps = 1.0;  // nominal capacity the router is told

  struct Proc {
    std::string name, ns, addr, role;
    std::vector<std::string> args;  // prfaas arguments (to restart it)
    std::unique_ptr<ChildProcess> proc;
    nlohmann::json ready;  // the worker's ready file (ports)
    int http_port() const { return ready.value("http_port", 0); }
  };

  explicit Topology(TopologyOptions options = {});
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  // Builds the namespaces and link, starts the router and the four workers, and waits until the
  // router reports all of them healthy. An error message, or "" on success.
  std::string Start();

  const std::string& ns_prfaas() const { return ns_prfaas_; }
  const std::string& ns_pd() const { return ns_pd_; }
  const std::string& dir() const { return dir_; }

  // Link control (tc / ip); false when the command failed.
  bool SetRate(const std::string& rate);
  bool SetLinkUp(bool up);

  Proc& router() { return *procs_.at(0); }
  Proc& worker(const std::string& name);  // "prfaas-prefill-0", "pd-prefill-0", "pd-decode-0|1"
  std::vector<Proc*> processes();

  // Requests issued from inside the PD namespace (where clients of the router live).
  HttpExchange Completion(const std::string& prompt, int max_tokens,
                          std::chrono::milliseconds deadline, bool stream = false,
                          const std::function<void(const std::string&)>& on_body = {});
  std::string RouterMetrics();
  std::string WorkerMetrics(const std::string& name);
  // `prfaasctl -o json <args...>` run in the PD namespace; nullopt (and `error`) on failure.
  std::optional<nlohmann::json> Ctl(const std::vector<std::string>& args,
                                    std::string* error = nullptr);

  // Number of registered workers the router currently reports healthy (prfaasctl workers).
  int HealthyWorkers();
  // Waits until `n` workers are healthy or the deadline passes.
  bool WaitHealthyWorkers(int n, std::chrono::milliseconds deadline);

  // Tails of every process log, for failure messages.
  std::string Logs(int lines = 15);

 private:
  std::string StartProcess(const std::string& name, const std::string& ns,
                           const std::vector<std::string>& args, bool worker);
  bool Sh(const std::string& cmd);

  TopologyOptions options_;
  std::string ns_prfaas_, ns_pd_, veth_prfaas_, veth_pd_, dir_;
  bool created_prfaas_ = false, created_pd_ = false;
  std::vector<std::unique_ptr<Proc>> procs_;
};

// A unique prompt of about `tokens` tokens (byte-level tokenizer: one token per byte). The
// leading id makes it uncached everywhere (the block-hash chain differs from the first block).
std::string UniquePrompt(int tokens);

}  // namespace prfaas::testing::e2e
