#include "worker/worker.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "decode/decode_service.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "engine/weights.h"
#include "prefill/prefill_service.h"
#include "prfaas/v1/router.grpc.pb.h"
#include "serving/capacity.h"
#include "serving/engine_loop.h"
#include "serving/grpc_status.h"
#include "serving/prefix_cache.h"
#include "transport/endpoint.h"

namespace prfaas::worker {

namespace {

bool RoleAllowsPrefill(const std::string& r) {
  return r == "prefill" || r == "both";
}
bool RoleAllowsDecode(const std::string& r) {
  return r == "decode" || r == "both";
}

v1::WorkerRole RoleToProto(const std::string& r) {
  if (r == "prefill") return v1::WORKER_ROLE_PREFILL;
  if (r == "decode") return v1::WORKER_ROLE_DECODE;
  return v1::WORKER_ROLE_BOTH;
}

Result<std::string> RoleFromProto(v1::WorkerRole r) {
  switch (r) {
    case v1::WORKER_ROLE_PREFILL: return std::string("prefill");
    case v1::WORKER_ROLE_DECODE: return std::string("decode");
    case v1::WORKER_ROLE_BOTH: return std::string("both");
    default: return InvalidArgument("role must be PREFILL, DECODE or BOTH");
  }
}

Result<std::shared_ptr<const engine::ModelWeights>> LoadModel(const WorkerConfig& cfg,
                                                              const engine::ModelConfig& mc) {
  namespace fs = std::filesystem;
  bool has_file = fs::is_directory(cfg.model) &&
                  (fs::exists(fs::path(cfg.model) / "model.safetensors") ||
                   fs::exists(fs::path(cfg.model) / "model.safetensors.index.json"));
  if (has_file) {
    PRFAAS_ASSIGN_OR_RETURN(auto w, engine::LoadWeights(mc, cfg.model));
    return std::make_shared<const engine::ModelWeights>(std::move(w));
  }
  PRFAAS_ASSIGN_OR_RETURN(auto w, engine::SyntheticWeights(mc, static_cast<uint64_t>(cfg.seed)));
  return std::make_shared<const engine::ModelWeights>(std::move(w));
}

}  // namespace

class Worker::Impl : public v1::WorkerAdmin::Service {
 public:
  explicit Impl(WorkerConfig c) : cfg(std::move(c)) {}
  ~Impl() override { StopAll(); }

  prfaas::Status Init();
  void StopAll();
  void ApplyRole();
  void PublishLoop();
  v1::LoadReport Load() const;
  int64_t InFlight() const { return decode->InFlight() + prefill->InFlight(); }
  // Waits until no request is in flight or the deadline passes; returns what is left.
  int64_t WaitIdle(double deadline_seconds) const;

  // WorkerAdmin.
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest* req,
                     v1::DrainReply* rep) override;
  grpc::Status Undrain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainReply* rep) override;
  grpc::Status SetRole(grpc::ServerContext*, const v1::SetRoleRequest* req,
                       v1::SetRoleReply* rep) override;
  grpc::Status Status(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                      v1::WorkerStatusReply* rep) override;

  WorkerConfig cfg;
  metrics::Registry& registry = metrics::DefaultRegistry();
  engine::ModelConfig model;
  std::unique_ptr<serving::EngineLoop> loop;
  std::unique_ptr<serving::Capacity> capacity;
  std::unique_ptr<serving::PrefixCache> cache;
  std::unique_ptr<decode::DecodeService> decode;
  std::unique_ptr<prefill::PrefillService> prefill;
  std::unique_ptr<transport::Receiver> receiver;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<http::Server> http_server;
  http::HealthState health;
  int grpc_port = 0;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::string role;
  bool draining = false;
  bool stopping = false;
  bool stopped = false;
  std::thread publisher;
};

prfaas::Status Worker::Impl::Init() {
  if (cfg.role != "prefill" && cfg.role != "decode" && cfg.role != "both") {
    return InvalidArgument("--role must be prefill, decode or both, got '" + cfg.role + "'");
  }
  if (cfg.cluster_kind != "prfaas" && cfg.cluster_kind != "pd") {
    return InvalidArgument("--cluster-kind must be prfaas or pd, got '" + cfg.cluster_kind + "'");
  }
  if (cfg.advertise_host.empty()) cfg.advertise_host = cfg.host;
  role = cfg.role;
  health.SetReady(false, "loading model");

  // HTTP first so /health answers (503, "loading model") while the model loads.
  http_server = std::make_unique<http::Server>(
      http::Server::Options{.bind_address = cfg.host, .port = cfg.http_port});
  http::AddObservabilityRoutes(*http_server, registry, health);
  http::RegisterProcessMetrics(registry, health);
  PRFAAS_RETURN_IF_ERROR(http_server->Start().WithContext("worker HTTP (--http-port)"));

  PRFAAS_ASSIGN_OR_RETURN(model, engine::ResolveModelConfig(cfg.model));
  PRFAAS_ASSIGN_OR_RETURN(auto weights, LoadModel(cfg, model));
  engine::EngineOptions eo;
  eo.kv_block_size = cfg.block_size;
  // The prefix cache has its own budget on top of request capacity, so cached blocks never
  // crowd out admitted requests.
  const bool use_cache = cfg.prefix_cache_blocks > 0;
  eo.num_kv_blocks = cfg.kv_blocks + (use_cache ? cfg.prefix_cache_blocks : 0);
  eo.num_state_slots = cfg.state_slots + (use_cache ? cfg.prefix_cache_checkpoints : 0);
  eo.prefill_chunk = cfg.prefill_chunk;
  PRFAAS_ASSIGN_OR_RETURN(auto eng, engine::Engine::Create(model, weights, eo));
  uint64_t fingerprint = eng->ModelFingerprint();
  loop = std::make_unique<serving::EngineLoop>(
      std::move(eng), serving::LoopOptions{cfg.prefill_tokens_per_step, cfg.max_decode_batch,
                                           cfg.checkpoint_interval, &registry});
  if (use_cache) {
    cache = std::make_unique<serving::PrefixCache>(
        serving::PrefixCacheOptions{cfg.block_size, cfg.checkpoint_interval,
                                    cfg.prefix_cache_blocks, cfg.prefix_cache_checkpoints,
                                    cfg.prefill_chunk},
        registry);
  }
  capacity = std::make_unique<serving::Capacity>(cfg.kv_blocks, cfg.state_slots);

  PRFAAS_ASSIGN_OR_RETURN(transport::Backend backend, transport::ParseBackend(cfg.transport));
  transport::SetReceiveBufferPoolBytes(static_cast<uint64_t>(cfg.transport_buffer_pool_mib) << 20);
  if (backend == transport::Backend::kInproc) {
    return InvalidArgument("--transport inproc only works inside one process; use tcp or ucx");
  }
  decode::DecodeOptions dopt;
  dopt.transport_backend = std::string(transport::BackendName(backend));
  dopt.transfer_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(cfg.transfer_timeout_seconds * 1000));
  dopt.cache_generated_blocks = cfg.prefix_cache_generated;
  decode = std::make_unique<decode::DecodeService>(*loop, *capacity, cache.get(), dopt, registry);
  prefill::PrefillOptions popt;
  popt.transport.tcp.connections = cfg.transport_connections;
  popt.transport.ucx.connections = cfg.transport_connections;
  prefill =
      std::make_unique<prefill::PrefillService>(*loop, *capacity, cache.get(), popt, registry);

  transport::ReceiverCallbacks cbs;
  decode::DecodeService* d = decode.get();
  cbs.on_commit = [d](transport::Bundle&& b) { d->OnBundle(std::move(b)); };
  cbs.on_abort = [d](uint64_t t, const prfaas::Status& why) { d->OnTransferAbort(t, why); };
  PRFAAS_ASSIGN_OR_RETURN(
      receiver, transport::Listen(backend, cfg.host, static_cast<uint16_t>(cfg.transport_port),
                                  transport::EndpointOptions{}, std::move(cbs)));
  decode->SetReceiver(receiver.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(cfg.host + ":" + std::to_string(cfg.grpc_port),
                           grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(decode.get());
  builder.RegisterService(prefill.get());
  builder.RegisterService(this);
  grpc_server = builder.BuildAndStart();
  if (!grpc_server || grpc_port == 0) {
    return Unavailable("cannot listen for gRPC on " + cfg.host + ":" +
                       std::to_string(cfg.grpc_port) + " (port in use?)");
  }
  if (cfg.worker_id.empty()) {
    cfg.worker_id = cfg.cluster + "-" + cfg.role + "-" + std::to_string(grpc_port);
  }
  ApplyRole();

  registry
      .Gauge("prfaas_engine_info", "Always 1; the loaded model.",
             {"model", "fingerprint", "device", "dtype"})
      .WithLabels({model.name, std::to_string(fingerprint), "cpu", "f32"})
      .Set(1);
  auto& kv_cap =
      registry.Gauge("prfaas_worker_kv_capacity_bytes", "Total bytes of a memory pool.", {"pool"});
  auto& kv_used =
      registry.Gauge("prfaas_worker_kv_used_bytes",
                     "Bytes in use (including reserved and leased) in a pool.", {"pool"});
  const int64_t block_bytes = model.KvBytesPerToken(4) * cfg.block_size;
  const int64_t slot_bytes = model.StateBytesPerSequence(4, 4);
  auto& kv_reserved = registry.Gauge(
      "prfaas_worker_kv_reserved_bytes",
      "Bytes reserved for incoming transfers (decode) or leased to outgoing ones (prefill).",
      {"pool"});
  auto& queued = registry.Gauge("prfaas_worker_queued_tokens",
                                "Uncached prompt tokens waiting (prefill).", {"service"});
  kv_cap.WithLabels({"attention"}).Set(static_cast<double>(block_bytes * cfg.kv_blocks));
  kv_cap.WithLabels({"state"}).Set(static_cast<double>(slot_bytes * cfg.state_slots));
  serving::Capacity* cap = capacity.get();
  serving::EngineLoop* lp = loop.get();
  // Every byte in use is reserved up front (admission control), so used == reserved here.
  registry.AddCollectHook([cap, lp, &kv_used, &kv_reserved, &queued, block_bytes, slot_bytes] {
    double kv = static_cast<double>(cap->reserved_blocks() * block_bytes);
    double st = static_cast<double>(cap->reserved_slots() * slot_bytes);
    kv_used.WithLabels({"attention"}).Set(kv);
    kv_used.WithLabels({"state"}).Set(st);
    kv_reserved.WithLabels({"attention"}).Set(kv);
    kv_reserved.WithLabels({"state"}).Set(st);
    queued.WithLabels({"prefill"}).Set(static_cast<double>(lp->Stats().prefill_tokens_pending));
  });

  if (!cfg.router.empty()) publisher = std::thread([this] { PublishLoop(); });
  health.SetReady(true);
  if (!cfg.ready_file.empty()) {
    // Write-then-rename so a reader never sees a partial file.
    nlohmann::json j = {{"worker_id", cfg.worker_id},
                        {"grpc_port", grpc_port},
                        {"http_port", http_server->port()},
                        {"transport_address", receiver->address()},
                        {"pid", static_cast<int>(::getpid())}};
    std::string tmp = cfg.ready_file + ".tmp";
    std::ofstream(tmp) << j.dump() << "\n";
    std::filesystem::rename(tmp, cfg.ready_file);
  }
  spdlog::info("worker {} ready: role={} cluster={}({}) model={} grpc={}:{} http={}:{} kv={}",
               cfg.worker_id, role, cfg.cluster, cfg.cluster_kind, model.name, cfg.host, grpc_port,
               cfg.host, http_server->port(), receiver->address());
  return prfaas::Status::Ok();
}

void Worker::Impl::ApplyRole() {
  std::lock_guard<std::mutex> lock(mu);
  bool d = !draining && RoleAllowsDecode(role);
  bool p = !draining && RoleAllowsPrefill(role);
  decode->SetAccepting(d, draining ? "draining" : "worker role is " + role);
  prefill->SetAccepting(p, draining ? "draining" : "worker role is " + role);
  auto& info =
      registry.Gauge("prfaas_worker_info", "Always 1; current role and model.", {"role", "model"});
  for (const char* r : {"prefill", "decode", "both"}) info.Remove({r, model.name});
  info.WithLabels({role, model.name}).Set(1);
  registry.Gauge("prfaas_worker_draining", "1 while the worker drains (no new admissions).")
      .Get()
      .Set(draining ? 1 : 0);
}

v1::LoadReport Worker::Impl::Load() const {
  v1::LoadReport r;
  auto ls = loop->Stats();
  r.set_queue_depth(static_cast<int32_t>(ls.prefill_queue + capacity->waiting()));
  r.set_running(static_cast<int32_t>(ls.decoding));
  r.set_waiting(static_cast<int32_t>(ls.prefill_queue));
  int64_t block_bytes = model.KvBytesPerToken(4) * cfg.block_size;
  r.set_kv_total_bytes(block_bytes * capacity->total_blocks());
  r.set_kv_free_bytes(block_bytes * (capacity->total_blocks() - capacity->reserved_blocks()));
  r.set_state_total_slots(capacity->total_slots());
  r.set_state_free_slots(capacity->total_slots() - capacity->reserved_slots());
  r.set_decode_batch_size(static_cast<int32_t>(ls.last_decode_batch));
  for (const auto& l : prefill->Links()) {
    auto* lt = r.add_links();
    lt->set_peer_endpoint(l.peer);
    lt->set_goodput_bytes_per_second(l.goodput_bytes_per_s);
    lt->set_bytes_in_flight(static_cast<int64_t>(l.bytes_in_flight));
    lt->set_queued_bytes(static_cast<int64_t>(l.queued_bytes));
    lt->set_rtt_seconds(l.rtt_seconds);
    lt->set_retransmits_total(static_cast<int64_t>(l.retransmits));
    lt->set_active_sessions(static_cast<int64_t>(l.active_bundles));
  }
  return r;
}

void Worker::Impl::PublishLoop() {
  auto channel = grpc::CreateChannel(cfg.router, grpc::InsecureChannelCredentials());
  auto stub = v1::Registry::NewStub(channel);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu);
      if (stopping) return;
    }
    grpc::ClientContext rctx;
    rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::RegisterRequest reg;
    reg.set_worker_id(cfg.worker_id);
    reg.set_cluster(cfg.cluster);
    reg.set_cluster_kind(cfg.cluster_kind == "prfaas" ? v1::CLUSTER_KIND_PRFAAS
                                                      : v1::CLUSTER_KIND_PD);
    {
      std::lock_guard<std::mutex> lock(mu);
      reg.set_role(RoleToProto(role));
    }
    reg.set_grpc_endpoint(cfg.advertise_host + ":" + std::to_string(grpc_port));
    reg.set_transport_endpoint(receiver->address());
    reg.set_model_fingerprint(
        std::to_string(loop->Call([](engine::Engine& e) { return e.ModelFingerprint(); })));
    reg.set_block_size(static_cast<int32_t>(cfg.block_size));
    reg.set_checkpoint_interval(static_cast<int32_t>(cfg.checkpoint_interval));
    v1::RegisterReply rep;
    auto st = stub->Register(&rctx, reg, &rep);
    double interval = 1.0;
    if (st.ok()) {
      if (rep.heartbeat_interval_seconds() > 0) interval = rep.heartbeat_interval_seconds();
      grpc::ClientContext pctx;
      v1::PublishAck ack;
      auto stream = stub->Publish(&pctx, &ack);
      // A (re)connected router starts from a full picture of our cache.
      if (cache) {
        v1::WorkerEvent clear;
        clear.set_worker_id(cfg.worker_id);
        clear.mutable_cache()->set_kind(v1::CacheEvent::KIND_CLEARED);
        stream->Write(clear);
        auto snap = loop->Call([this](engine::Engine&) { return cache->Snapshot(); });
        for (auto& rec : snap) {
          if (rec.hashes.empty()) continue;
          v1::WorkerEvent ce;
          ce.set_worker_id(cfg.worker_id);
          ce.mutable_cache()->set_kind(rec.kind == serving::CacheEventRecord::kAttnStored
                                           ? v1::CacheEvent::KIND_ATTN_STORED
                                           : v1::CacheEvent::KIND_CHECKPOINT_STORED);
          for (auto h : rec.hashes) ce.mutable_cache()->add_block_hashes(h);
          stream->Write(ce);
        }
      }
      while (true) {
        v1::WorkerEvent ev;
        ev.set_worker_id(cfg.worker_id);
        *ev.mutable_load() = Load();
        if (!stream->Write(ev)) break;
        bool sent = true;
        if (cache) {
          for (auto& rec : cache->TakeEvents()) {
            v1::WorkerEvent ce;
            ce.set_worker_id(cfg.worker_id);
            auto* c = ce.mutable_cache();
            switch (rec.kind) {
              case serving::CacheEventRecord::kAttnStored:
                c->set_kind(v1::CacheEvent::KIND_ATTN_STORED);
                break;
              case serving::CacheEventRecord::kAttnEvicted:
                c->set_kind(v1::CacheEvent::KIND_ATTN_EVICTED);
                break;
              case serving::CacheEventRecord::kCheckpointStored:
                c->set_kind(v1::CacheEvent::KIND_CHECKPOINT_STORED);
                break;
              case serving::CacheEventRecord::kCheckpointEvicted:
                c->set_kind(v1::CacheEvent::KIND_CHECKPOINT_EVICTED);
                break;
            }
            for (auto h : rec.hashes) c->add_block_hashes(h);
            if (!stream->Write(ce)) {
              sent = false;
              break;
            }
          }
        }
        if (!sent) break;
        std::unique_lock<std::mutex> lock(mu);
        if (cv.wait_for(lock, std::chrono::duration<double>(interval), [&] { return stopping; })) {
          lock.unlock();
          stream->WritesDone();
          stream->Finish();
          return;
        }
      }
      stream->Finish();
    } else {
      spdlog::debug("router registry {} unreachable: {}", cfg.router, st.error_message());
    }
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; })) return;
  }
}

int64_t Worker::Impl::WaitIdle(double deadline_seconds) const {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(deadline_seconds);
  while (InFlight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return InFlight();
}

grpc::Status Worker::Impl::Drain(grpc::ServerContext*, const v1::DrainRequest* req,
                                 v1::DrainReply* rep) {
  {
    std::lock_guard<std::mutex> lock(mu);
    draining = true;
  }
  ApplyRole();
  health.SetReady(false, "draining");
  double deadline =
      req->deadline_seconds() > 0 ? req->deadline_seconds() : cfg.drain_deadline_seconds;
  rep->set_remaining_requests(static_cast<int32_t>(WaitIdle(deadline)));
  return grpc::Status::OK;
}

grpc::Status Worker::Impl::Undrain(grpc::ServerContext*, const v1::DrainRequest*,
                                   v1::DrainReply* rep) {
  {
    std::lock_guard<std::mutex> lock(mu);
    draining = false;
  }
  ApplyRole();
  health.SetReady(true);
  rep->set_remaining_requests(static_cast<int32_t>(InFlight()));
  return grpc::Status::OK;
}

grpc::Status Worker::Impl::SetRole(grpc::ServerContext*, const v1::SetRoleRequest* req,
                                   v1::SetRoleReply* rep) {
  auto new_role = RoleFromProto(req->role());
  if (!new_role.ok()) return serving::ToGrpc(new_role.status());
  {
    std::lock_guard<std::mutex> lock(mu);
    draining = true;
  }
  ApplyRole();
  double deadline = req->drain_deadline_seconds() > 0 ? req->drain_deadline_seconds()
                                                      : cfg.drain_deadline_seconds;
  int64_t left = WaitIdle(deadline);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (left == 0) role = *new_role;
    draining = false;
  }
  ApplyRole();
  if (left > 0) {
    return serving::ToGrpc(DeadlineExceeded(std::to_string(left) +
                                            " requests still running after the drain deadline; "
                                            "role unchanged"));
  }
  spdlog::info("worker {} switched role to {}", cfg.worker_id, *new_role);
  rep->set_role(RoleToProto(*new_role));
  return grpc::Status::OK;
}

grpc::Status Worker::Impl::Status(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                                  v1::WorkerStatusReply* rep) {
  rep->set_worker_id(cfg.worker_id);
  rep->set_cluster(cfg.cluster);
  rep->set_cluster_kind(cfg.cluster_kind == "prfaas" ? v1::CLUSTER_KIND_PRFAAS
                                                     : v1::CLUSTER_KIND_PD);
  {
    std::lock_guard<std::mutex> lock(mu);
    rep->set_role(RoleToProto(role));
    rep->set_draining(draining);
  }
  *rep->mutable_load() = Load();
  return grpc::Status::OK;
}

void Worker::Impl::StopAll() {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (stopped) return;
    stopped = true;
    stopping = true;
  }
  cv.notify_all();
  if (publisher.joinable()) publisher.join();
  if (grpc_server)
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (receiver) receiver->Shutdown();
  if (loop) loop->Stop();
  if (http_server) http_server->Stop();
}

Result<std::unique_ptr<Worker>> Worker::Start(const WorkerConfig& config) {
  auto impl = std::make_unique<Impl>(config);
  PRFAAS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() {
  Shutdown();
}

void Worker::Wait() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopping; });
}

void Worker::Shutdown() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->draining = true;
  }
  impl_->ApplyRole();
  impl_->health.SetReady(false, "shutting down");
  int64_t left = impl_->WaitIdle(impl_->cfg.drain_deadline_seconds);
  if (left > 0) spdlog::warn("shutting down with {} requests still in flight", left);
  impl_->StopAll();
}

int Worker::grpc_port() const {
  return impl_->grpc_port;
}
int Worker::http_port() const {
  return impl_->http_server->port();
}
std::string Worker::transport_address() const {
  return impl_->receiver->address();
}

}  // namespace prfaas::worker
