#include "apps/up/up.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/signals.h"
#include "common/subprocess.h"
#include "engine/config.h"

namespace prfaas::up {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Where(const std::string& source, const YAML::Node& n) {
  return n.Mark().line >= 0 ? source + ":" + std::to_string(n.Mark().line + 1) : source;
}

// True when nothing listens on host:port (we can bind it ourselves).
bool PortFree(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (host != "127.0.0.1" && host != "localhost") a.sin_addr.s_addr = htonl(INADDR_ANY);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// Blocking GET returning the status code (0 when nothing answers).
int HttpStatus(const std::string& host, int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)host;
  int status = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[64] = {};
      ssize_t n = read(fd, buf, sizeof buf - 1);
      if (n > 12 && std::string(buf, 5) == "HTTP/") status = std::atoi(buf + 9);
    }
  }
  close(fd);
  return status;
}

struct Child {
  std::string name;
  std::unique_ptr<Subprocess> proc;
  nlohmann::json ready;
};

class Launcher {
 public:
  Launcher(Topology t, std::string log_dir) : topo_(std::move(t)), log_dir_(std::move(log_dir)) {}

  Status Start();
  int Supervise();  // until a signal or a child dies; returns the exit code
  void StopAll();

 private:
  Status StartRouter();
  Status StartWorker(const ClusterSpec& c, const WorkerSpec& w, int index);
  void Banner() const;

  Topology topo_;
  std::string log_dir_;
  std::string self_ = SelfExecutable();
  std::vector<Child> children_;
};

Status Launcher::StartRouter() {
  std::vector<std::string> args = {"router",
                                   "--http.address",
                                   topo_.host,
                                   "--http.port",
                                   std::to_string(topo_.port),
                                   "--grpc.address",
                                   topo_.host,
                                   "--admin.port",
                                   std::to_string(topo_.admin_port),
                                   "--registry.port",
                                   std::to_string(topo_.registry_port),
                                   "--tokenizer",
                                   topo_.tokenizer,
                                   "--model",
                                   fs::path(topo_.model).filename().string(),
                                   "--policy",
                                   topo_.policy,
                                   "--threshold.base",
                                   std::to_string(topo_.threshold_tokens)};
  for (const auto& l : topo_.links) {
    args.push_back("--links");
    args.push_back(l);
  }
  args.insert(args.end(), topo_.router_args.begin(), topo_.router_args.end());
  Child c;
  c.name = "router";
  c.proc = std::make_unique<Subprocess>(self_, args, log_dir_ + "/router.log");
  children_.push_back(std::move(c));
  // The router answers HTTP once it listens.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (HttpStatus(topo_.host, topo_.port, "/health") == 0) {
    if (!children_.back().proc->Running()) {
      return Unavailable("router " + children_.back().proc->Describe() + "; its log (" +
                         children_.back().proc->log_path() + ") ends with:\n" +
                         children_.back().proc->LogTail(15));
    }
    if (Clock::now() > deadline)
      return DeadlineExceeded("router did not answer on port " + std::to_string(topo_.port) +
                              " within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Ok();
}

Status Launcher::StartWorker(const ClusterSpec& cl, const WorkerSpec& w, int index) {
  std::string name = cl.name + "-" + w.role + "-" + std::to_string(index);
  std::string ready = log_dir_ + "/" + name + ".ready.json";
  std::vector<std::string> args = {
      "worker",       "--role",   w.role,
      "--cluster",    cl.name,    "--cluster-kind",
      cl.kind,        "--model",  topo_.model,
      "--worker-id",  name,       "--host",
      topo_.host,     "--router", topo_.host + ":" + std::to_string(topo_.registry_port),
      "--ready-file", ready};
  args.insert(args.end(), w.extra_args.begin(), w.extra_args.end());
  Child c;
  c.name = name;
  c.proc = std::make_unique<Subprocess>(self_, args, log_dir_ + "/" + name + ".log");
  auto deadline = Clock::now() + std::chrono::seconds(120);
  for (;;) {
    std::ifstream f(ready);
    if (f) {
      std::stringstream ss;
      ss << f.rdbuf();
      auto j = nlohmann::json::parse(ss.str(), nullptr, false);
      if (!j.is_discarded()) {
        c.ready = j;
        break;
      }
    }
    if (!c.proc->Running()) {
      return Unavailable("worker " + name + " " + c.proc->Describe() + "; its log (" +
                         c.proc->log_path() + ") ends with:\n" + c.proc->LogTail(15));
    }
    if (Clock::now() > deadline)
      return DeadlineExceeded("worker " + name + " not ready within 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  children_.push_back(std::move(c));
  return Status::Ok();
}

Status Launcher::Start() {
  PRFAAS_RETURN_IF_ERROR(StartRouter());
  for (const auto& cl : topo_.clusters) {
    int i = 0;
    for (const auto& w : cl.workers) PRFAAS_RETURN_IF_ERROR(StartWorker(cl, w, i++));
  }
  // Ready once the router sees its workers.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (HttpStatus(topo_.host, topo_.port, "/health") != 200) {
    if (Clock::now() > deadline) {
      return DeadlineExceeded("router /health not ready 30 s after the workers started; see " +
                              log_dir_ + "/router.log");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Banner();
  return Status::Ok();
}

void Launcher::Banner() const {
  std::string base = "http://" + topo_.host + ":" + std::to_string(topo_.port);
  std::string model = fs::path(topo_.model).filename().string();
  std::cout << "\nprfaas is up: model " << topo_.model << ", policy " << topo_.policy
            << " (offload threshold " << topo_.threshold_tokens << " tokens)\n\n"
            << "  OpenAI API  " << base << "/v1  (models: " << base << "/v1/models)\n"
            << "  metrics     " << base << "/metrics\n"
            << "  admin       prfaasctl --router " << topo_.host << ":" << topo_.admin_port
            << " status\n";
  for (const auto& c : children_) {
    if (c.name == "router") continue;
    std::cout << "  worker      " << c.name << "  grpc :" << c.ready.value("grpc_port", 0)
              << "  metrics http://" << topo_.host << ":" << c.ready.value("http_port", 0)
              << "/metrics\n";
  }
  std::cout << "  logs        " << log_dir_ << "/\n\n"
            << "Try:\n  curl -N " << base
            << "/v1/chat/completions -H 'Content-Type: application/json' \\\n"
            << "    -d '{\"model\": \"" << model
            << "\", \"messages\": [{\"role\": \"user\", \"content\": \"In the beginning\"}], "
               "\"max_tokens\": 64, \"stream\": true}'\n\n"
            << "Ctrl-C stops everything.\n"
            << std::flush;
}

int Launcher::Supervise() {
  std::atomic<bool> done{false};
  std::atomic<int> signal_seen{0};
  std::thread waiter([&] {
    int sig = ShutdownSignals::Wait();
    signal_seen = sig;
    done = true;
  });
  int code = 0;
  while (!done) {
    for (auto& c : children_) {
      if (!c.proc->Running()) {
        std::cerr << "prfaas up: " << c.name << " " << c.proc->Describe() << "; its log ("
                  << c.proc->log_path() << ") ends with:\n"
                  << c.proc->LogTail(15) << "stopping the rest.\n";
        code = 1;
        done = true;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ShutdownSignals::Wake();
  waiter.join();
  if (signal_seen) std::cerr << "\nprfaas up: stopping (signal " << signal_seen << ")\n";
  StopAll();
  return code;
}

void Launcher::StopAll() {
  // Router first (no new requests), then workers; each drains on SIGTERM.
  for (auto& c : children_) c.proc->Signal(SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(20);
  for (auto& c : children_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (!c.proc->Wait(std::max(left, std::chrono::milliseconds(0)))) {
      std::cerr << "prfaas up: " << c.name << " did not stop in time; killing it\n";
      c.proc->Signal(SIGKILL);
      c.proc->Wait(std::chrono::seconds(5));
    }
  }
  children_.clear();
}

Status CheckTopology(const Topology& t) {
  if (t.clusters.empty()) return InvalidArgument("topology has no clusters");
  bool decode = false, prefill = false;
  for (const auto& c : t.clusters) {
    for (const auto& w : c.workers) {
      decode |= w.role == "decode" || w.role == "both";
      prefill |= w.role == "prefill" || w.role == "both";
    }
  }
  if (!decode)
    return InvalidArgument("topology has no decode-capable worker (role decode or both)");
  if (!prefill) return InvalidArgument("topology has no prefill-capable worker");
  auto model = engine::ResolveModelConfig(t.model);
  if (!model.ok()) {
    return NotFound("model '" + t.model + "' cannot be loaded: " + model.status().message() +
                    " (run from the repository root for the embedded model, or pass --model "
                    "tiny for a synthetic one)");
  }
  for (auto [what, port] : {std::pair{"port", t.port}, std::pair{"admin_port", t.admin_port},
                            std::pair{"registry_port", t.registry_port}}) {
    if (!PortFree(t.host, port)) {
      return Unavailable(std::string(what) + " " + std::to_string(port) + " on " + t.host +
                         " is already in use (another prfaas up?); pick another with --" +
                         (std::string(what) == "port" ? "port" : std::string(what)));
    }
  }
  return Status::Ok();
}

}  // namespace

Topology DefaultTopology() {
  Topology t;
  t.clusters = {
      {"prfaas", "prfaas", {{"prefill", {}}}},
      {"pd", "pd", {{"prefill", {}}, {"decode", {}}}},
  };
  t.links = {"prfaas:pd:10"};
  return t;
}

Result<Topology> ParseTopology(const std::string& text, const std::string& source) {
  Topology t = DefaultTopology();
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ": invalid YAML: " + e.what());
  }
  if (!root.IsMap()) return InvalidArgument(source + ": the topology must be a mapping");
  try {
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      std::string at = Where(source, kv.first);
      if (key == "model")
        t.model = v.as<std::string>();
      else if (key == "tokenizer")
        t.tokenizer = v.as<std::string>();
      else if (key == "host")
        t.host = v.as<std::string>();
      else if (key == "port")
        t.port = v.as<int>();
      else if (key == "admin_port")
        t.admin_port = v.as<int>();
      else if (key == "registry_port")
        t.registry_port = v.as<int>();
      else if (key == "policy")
        t.policy = v.as<std::string>();
      else if (key == "threshold_tokens")
        t.threshold_tokens = v.as<int>();
      else if (key == "router_args")
        t.router_args = v.as<std::vector<std::string>>();
      else if (key == "links")
        t.links = v.as<std::vector<std::string>>();
      else if (key == "clusters") {
        if (!v.IsSequence()) return InvalidArgument(at + ": 'clusters' must be a list");
        t.clusters.clear();
        for (const auto& c : v) {
          ClusterSpec cs;
          for (const auto& ckv : c) {
            std::string ck = ckv.first.as<std::string>();
            if (ck == "name")
              cs.name = ckv.second.as<std::string>();
            else if (ck == "kind")
              cs.kind = ckv.second.as<std::string>();
            else if (ck == "workers") {
              for (const auto& w : ckv.second) {
                WorkerSpec ws;
                if (w.IsScalar()) {
                  ws.role = w.as<std::string>();
                } else {
                  for (const auto& wkv : w) {
                    std::string wk = wkv.first.as<std::string>();
                    if (wk == "role")
                      ws.role = wkv.second.as<std::string>();
                    else if (wk == "args")
                      ws.extra_args = wkv.second.as<std::vector<std::string>>();
                    else
                      return InvalidArgument(Where(source, wkv.first) + ": unknown worker key '" +
                                             wk + "' (role, args)");
                  }
                }
                if (ws.role != "prefill" && ws.role != "decode" && ws.role != "both") {
                  return InvalidArgument(Where(source, w) + ": worker role '" + ws.role +
                                         "' is not prefill, decode or both");
                }
                cs.workers.push_back(ws);
              }
            } else {
              return InvalidArgument(Where(source, ckv.first) + ": unknown cluster key '" + ck +
                                     "' (name, kind, workers)");
            }
          }
          if (cs.name.empty())
            return InvalidArgument(Where(source, c) + ": cluster without a name");
          if (cs.kind != "prfaas" && cs.kind != "pd") {
            return InvalidArgument(Where(source, c) + ": cluster '" + cs.name + "' kind '" +
                                   cs.kind + "' is not prfaas or pd");
          }
          t.clusters.push_back(cs);
        }
      } else {
        return InvalidArgument(at + ": unknown topology key '" + key +
                               "' (model, tokenizer, host, port, admin_port, registry_port, "
                               "policy, threshold_tokens, router_args, clusters, links)");
      }
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return t;
}

void RegisterUpCommand(CLI::App& app) {
  struct Args {
    std::string config, model, policy, log_dir;
    int port = 0, threshold = -1;
  };
  auto a = std::make_shared<Args>();
  auto* sub =
      app.add_subcommand("up", "Start a local PrfaaS + PD topology and serve the OpenAI API");
  sub->add_option("--config", a->config, "topology YAML (default: built in)");
  sub->add_option("--model", a->model, "model directory or preset (default models/kjv-tiny)");
  sub->add_option("--port", a->port, "router HTTP port (default 8000)");
  sub->add_option("--policy", a->policy, "routing policy (default prfaas)");
  sub->add_option("--threshold", a->threshold, "offload threshold t in tokens");
  sub->add_option("--log-dir", a->log_dir, "where child logs go (default: a new /tmp folder)");
  sub->callback([a] {
    Topology t = DefaultTopology();
    if (!a->config.empty()) {
      std::ifstream f(a->config);
      if (!f) {
        std::cerr << "prfaas up: cannot read topology file '" << a->config << "'\n";
        throw CLI::RuntimeError(2);
      }
      std::stringstream ss;
      ss << f.rdbuf();
      auto parsed = ParseTopology(ss.str(), a->config);
      if (!parsed.ok()) {
        std::cerr << "prfaas up: " << parsed.status().message() << "\n";
        throw CLI::RuntimeError(2);
      }
      t = *parsed;
    }
    if (!a->model.empty()) t.model = a->model;
    if (a->port) t.port = a->port;
    if (!a->policy.empty()) t.policy = a->policy;
    if (a->threshold >= 0) t.threshold_tokens = a->threshold;
    if (a->port) {  // keep the admin and registry ports next to a moved API port
      t.admin_port = a->port + 1;
      t.registry_port = a->port + 2;
    }
    Status ok = CheckTopology(t);
    if (!ok.ok()) {
      std::cerr << "prfaas up: " << ok.message() << "\n";
      throw CLI::RuntimeError(2);
    }
    std::string dir = a->log_dir;
    if (dir.empty()) {
      std::string tmpl = "/tmp/prfaas-up-XXXXXX";
      dir = mkdtemp(tmpl.data()) ? tmpl : "/tmp";
    }
    fs::create_directories(dir);
    ShutdownSignals::Install();
    Launcher launcher(t, dir);
    Status st = launcher.Start();
    if (!st.ok()) {
      std::cerr << "prfaas up: " << st.message() << "\n";
      launcher.StopAll();
      throw CLI::RuntimeError(1);
    }
    int code = launcher.Supervise();
    if (code != 0) throw CLI::RuntimeError(code);
  });
}

}  // namespace prfaas::up
