// One entry point for every KV transport backend: callers pick "tcp", "ucx" or "inproc" by name
// (from config) and get the same Receiver / Sender contract (transport/transport.h).
//
//   auto backend = ParseBackend(cfg.transport);           // "tcp" | "ucx" | "inproc"
//   auto rx = Listen(*backend, "127.0.0.1", 0, opts, callbacks);
//   // ship rx->address() to the prefill side; there:
//   auto tx = Connect(address, opts);                      // scheme picks the backend
//
// Addresses: TCP receivers report a bare "host:port" (kept for existing callers), UCX receivers
// "ucx://host:port", inproc receivers their name; Connect also takes "tcp://host:port" and
// "inproc://name". Only the options block of the chosen backend is used.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "transport/transport.h"

namespace prfaas::transport {

enum class Backend { kTcp, kUcx, kInproc };

// "tcp" | "ucx" | "inproc". "ucx" fails with UNIMPLEMENTED in builds without PRFAAS_UCX.
Result<Backend> ParseBackend(std::string_view name);
std::string_view BackendName(Backend b);
bool UcxAvailable();  // true when this build has the UCX backend

struct UcxOptions {
  CommonOptions common;
  int connections = 1;      // sender: UCP endpoints per peer (stripes), 1..64
  std::string transports;   // UCX_TLS for this context, e.g. "tcp,self"; empty = environment/UCX
  std::string net_devices;  // UCX_NET_DEVICES, e.g. "lo"; empty = environment/UCX default
  std::chrono::milliseconds connect_timeout{5000};
};

struct EndpointOptions {
  TcpOptions tcp;
  UcxOptions ucx;
  CommonOptions inproc;
};

// Listens on host:port (0 = free port) for tcp/ucx, or under name `host` for inproc.
Result<std::unique_ptr<Receiver>> Listen(Backend backend, const std::string& host, uint16_t port,
                                         const EndpointOptions& options,
                                         ReceiverCallbacks callbacks);
// address: what Receiver::address() returned. "ucx://h:p", "inproc://name", "tcp://h:p" or a bare
// "h:p" (= tcp).
Result<std::unique_ptr<Sender>> Connect(const std::string& address, const EndpointOptions& options);

// UCX backend (UCP stream API). Listen on host:port; address() is "ucx://host:port".
Result<std::unique_ptr<Receiver>> ListenUcx(const std::string& host, uint16_t port,
                                            const UcxOptions& options, ReceiverCallbacks callbacks);
Result<std::unique_ptr<Sender>> ConnectUcx(const std::string& host, uint16_t port,
                                           const UcxOptions& options);

}  // namespace prfaas::transport
