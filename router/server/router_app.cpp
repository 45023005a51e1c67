#include "router/server/router_app.h"

#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/http_server.h"
#include "router/admin/admin_service.h"
#include "router/registry/registry_service.h"
#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

class RouterApp::Impl {
 public:
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Orchestrator> orchestrator;
  std::unique_ptr<Rebalancer> rebalancer;
  std::unique_ptr<FrontDoor> front_door;
  std::unique_ptr<RegistryService> registry_service;
  std::unique_ptr<AdminService> admin_service;
  std::unique_ptr<grpc::Server> registry_server, admin_server;
  http::HealthState health;
  std::thread housekeeping;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool started = false;
  bool stopped = false;
};

RouterApp::RouterApp(RouterConfig config, metrics::Registry* registry)
    : config_(std::move(config)),
      registry_(registry ? registry : &metrics::DefaultRegistry()),
      impl_(std::make_unique<Impl>()) {}

RouterApp::~RouterApp() {
  Stop();
}

int RouterApp::http_port() const {
  return impl_->front_door ? impl_->front_door->port() : 0;
}

namespace {

Result<std::unique_ptr<grpc::Server>> StartGrpc(const std::string& address, int port,
                                                grpc::Service* service, int* bound) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(fmt::format("{}:{}", address, port), grpc::InsecureServerCredentials(),
                           bound);
  builder.RegisterService(service);
  auto server = builder.BuildAndStart();
  if (!server || *bound == 0) {
    return Unavailable(fmt::format("cannot listen for gRPC on {}:{}", address, port));
  }
  return server;
}

}  // namespace

Status RouterApp::Start() {
  Impl& m = *impl_;
  auto tok = LoadTokenizer(config_.tokenizer);
  if (!tok.ok()) return tok.status().WithContext("tokenizer");
  m.tokenizer = std::move(*tok);
  WorkerDirectory::Options dir_options = config_.directory;
  dir_options.registry = registry_;
  PRFAAS_ASSIGN_OR_RETURN(directory_, WorkerDirectory::Create(dir_options));
  PRFAAS_ASSIGN_OR_RETURN(m.rebalancer,
                          Rebalancer::Create(config_.planner, *directory_, *registry_));
  for (const auto& spec : config_.static_workers) {
    PRFAAS_ASSIGN_OR_RETURN(WorkerInfo info, ParseWorkerSpec(spec));
    PRFAAS_RETURN_IF_ERROR(directory_->Register(info, Now()).status());
  }
  for (const auto& spec : config_.links) {
    PRFAAS_ASSIGN_OR_RETURN(LinkSpec link, ParseLinkSpec(spec));
    directory_->AddLink(link);
  }
  m.orchestrator = std::make_unique<Orchestrator>(config_.orchestrator, *directory_, *registry_);
  if (config_.registry_port >= 0) {
    m.registry_service = std::make_unique<RegistryService>(*directory_);
    PRFAAS_ASSIGN_OR_RETURN(m.registry_server,
                            StartGrpc(config_.grpc_bind_address, config_.registry_port,
                                      m.registry_service.get(), &registry_port_));
  }
  if (config_.admin_port >= 0) {
    m.admin_service =
        std::make_unique<AdminService>(*directory_, *m.tokenizer, config_.admin_token);
    PRFAAS_ASSIGN_OR_RETURN(m.admin_server, StartGrpc(config_.grpc_bind_address, config_.admin_port,
                                                      m.admin_service.get(), &admin_port_));
  }

  // Gauges computed from the directory at scrape time.
  auto& threshold = registry_->Gauge("prfaas_router_offload_threshold_tokens",
                                     "Current selective-offload threshold t.");
  auto& workers = registry_->Gauge("prfaas_router_workers", "Registered workers.",
                                   {"target_cluster", "role", "state"});
  auto& capacity = registry_->Gauge("prfaas_router_link_capacity_bytes_per_second",
                                    "Configured capacity of an inter-cluster link.",
                                    {"src_cluster", "dst_cluster"});
  auto& goodput =
      registry_->Gauge("prfaas_router_link_goodput_bytes_per_second",
                       "Link goodput as the policy sees it.", {"src_cluster", "dst_cluster"});
  auto& backlog =
      registry_->Gauge("prfaas_router_link_backlog_bytes",
                       "KV bytes queued or in flight on the link.", {"src_cluster", "dst_cluster"});
  auto& index_blocks =
      registry_->Gauge("prfaas_router_cache_index_blocks", "Entries in the global cache index.",
                       {"target_cluster", "kind"});
  WorkerDirectory* dir = directory_.get();
  registry_->AddCollectHook(
      [dir, &threshold, &workers, &capacity, &goodput, &backlog, &index_blocks] {
        dir->Inspect([&](const ClusterState& s, const CacheIndex& index, Policy& p) {
          if (auto* tc = p.threshold_controller()) {
            const uint32_t t = tc->threshold();
            threshold.Get().Set(t == kNoOffload ? std::numeric_limits<double>::infinity() : t);
          }
          std::map<metrics::LabelValues, double> counts;
          for (const auto& c : s.clusters) {
            for (auto role : {"prefill", "decode", "both"}) {
              for (auto st : {"healthy", "draining", "unhealthy"}) counts[{c.name, role, st}] = 0;
            }
          }
          for (const auto& w : s.workers) {
            const char* st = !w.healthy ? "unhealthy" : (w.draining ? "draining" : "healthy");
            counts[{s.clusters[w.cluster].name, std::string(WorkerRoleName(w.role)), st}] += 1;
          }
          for (const auto& [labels, n] : counts) workers.WithLabels(labels).Set(n);
          std::vector<WorkerEntries> held(s.clusters.size());
          for (WorkerIndex w = 0; w < s.workers.size(); ++w) {
            const WorkerEntries e = index.entries_of(w);
            held[s.workers[w].cluster].attention += e.attention;
            held[s.workers[w].cluster].checkpoints += e.checkpoints;
          }
          for (ClusterIndex c = 0; c < s.clusters.size(); ++c) {
            index_blocks.WithLabels({s.clusters[c].name, "attention"})
                .Set(static_cast<double>(held[c].attention));
            index_blocks.WithLabels({s.clusters[c].name, "checkpoint"})
                .Set(static_cast<double>(held[c].checkpoints));
          }
          for (const auto& l : s.links) {
            metrics::LabelValues lv{s.clusters[l.src].name, s.clusters[l.dst].name};
            capacity.WithLabels(lv).Set(l.nominal_bps / 8);
            goodput.WithLabels(lv).Set(l.goodput_bps / 8);
            backlog.WithLabels(lv).Set(static_cast<double>(l.backlog_bytes));
          }
        });
      });

  http::RegisterProcessMetrics(*registry_, m.health);
  m.front_door = std::make_unique<FrontDoor>(config_.http, *m.orchestrator, *m.tokenizer,
                                             *registry_, m.health);
  PRFAAS_RETURN_IF_ERROR(m.front_door->Start());
  m.housekeeping = std::thread([this] {
    Impl& mm = *impl_;
    std::unique_lock lock(mm.mu);
    while (!mm.stopping) {
      mm.cv.wait_for(lock, std::chrono::milliseconds(200));
      const TimePoint now = Now();
      directory_->Refresh(now);
      directory_->Inspect(
          [&](const ClusterState& s, const CacheIndex&, Policy& p) { p.Tick(s, now); });
    }
  });
  m.rebalancer->Start();
  m.started = true;
  m.health.SetReady(true);
  spdlog::info("router ready: http {} admin {} registry {} policy {} tokenizer {}", http_port(),
               admin_port_, registry_port_, directory_->policy_name(), m.tokenizer->Name());
  return Status::Ok();
}

void RouterApp::Stop() {
  Impl& m = *impl_;
  if (!m.started || m.stopped) return;
  m.stopped = true;
  m.health.SetReady(false, "shutting down");
  {
    std::lock_guard lock(m.mu);
    m.stopping = true;
  }
  m.cv.notify_all();
  if (m.housekeeping.joinable()) m.housekeeping.join();
  if (m.rebalancer) m.rebalancer->Stop();
  if (m.front_door) m.front_door->Stop();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(2);
  if (m.admin_server) m.admin_server->Shutdown(deadline);
  if (m.registry_server) m.registry_server->Shutdown(deadline);
}

}  // namespace prfaas::router
