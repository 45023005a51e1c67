#include "transport/endpoint.h"

#include <charconv>

namespace prfaas::transport {
namespace {

// Splits "host:port" (IPv6 hosts in brackets: "[::1]:80").
Result<std::pair<std::string, uint16_t>> SplitHostPort(std::string_view hp) {
  const size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == hp.size())
    return InvalidArgument("transport address '" + std::string(hp) + "' is not host:port");
  std::string_view host = hp.substr(0, colon), port = hp.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
    return InvalidArgument("bad port in transport address '" + std::string(hp) + "'");
  return std::pair<std::string, uint16_t>{std::string(host), static_cast<uint16_t>(value)};
}

}  // namespace

bool UcxAvailable() {
#ifdef PRFAAS_HAVE_UCX
  return true;
#else
  return false;
#endif
}

Result<Backend> ParseBackend(std::string_view name) {
  if (name == "tcp") return Backend::kTcp;
  if (name == "inproc") return Backend::kInproc;
  if (name == "ucx") {
    if (!UcxAvailable())
      return Unimplemented(
          "transport backend 'ucx' is not built in (configure with PRFAAS_UCX=ON "
          "and libucx-dev installed)");
    return Backend::kUcx;
  }
  return InvalidArgument("unknown transport backend '" + std::string(name) +
                         "' (expected tcp, ucx or inproc)");
}

std::string_view BackendName(Backend b) {
  switch (b) {
    case Backend::kTcp: return "tcp";
    case Backend::kUcx: return "ucx";
    case Backend::kInproc: return "inproc";
  }
  return "unknown";
}

Result<std::unique_ptr<Receiver>> Listen(Backend backend, const std::string& host, uint16_t port,
                                         const EndpointOptions& options,
                                         ReceiverCallbacks callbacks) {
  switch (backend) {
    case Backend::kTcp: return ListenTcp(host, port, options.tcp, std::move(callbacks));
    case Backend::kUcx: return ListenUcx(host, port, options.ucx, std::move(callbacks));
    case Backend::kInproc: return ListenInproc(host, options.inproc, std::move(callbacks));
  }
  return InvalidArgument("unknown transport backend");
}

Result<std::unique_ptr<Sender>> Connect(const std::string& address,
                                        const EndpointOptions& options) {
  std::string_view a = address;
  auto strip = [&](std::string_view scheme) {
    if (a.substr(0, scheme.size()) != scheme) return false;
    a.remove_prefix(scheme.size());
    return true;
  };
  if (strip("inproc://")) {
    if (a.empty()) return InvalidArgument("empty inproc receiver name");
    return ConnectInproc(std::string(a), options.inproc);
  }
  if (strip("ucx://")) {
    PRFAAS_ASSIGN_OR_RETURN(auto hp, SplitHostPort(a));
    return ConnectUcx(hp.first, hp.second, options.ucx);
  }
  if (!strip("tcp://") && a.find("://") != std::string_view::npos)
    return InvalidArgument("unknown scheme in transport address '" + address + "'");
  PRFAAS_ASSIGN_OR_RETURN(auto hp, SplitHostPort(a));
  return ConnectTcp(hp.first, hp.second, options.tcp);
}

#ifndef PRFAAS_HAVE_UCX
Result<std::unique_ptr<Receiver>> ListenUcx(const std::string&, uint16_t, const UcxOptions&,
                                            ReceiverCallbacks) {
  return Unimplemented("transport backend 'ucx' is not built in");
}
Result<std::unique_ptr<Sender>> ConnectUcx(const std::string&, uint16_t, const UcxOptions&) {
  return Unimplemented("transport backend 'ucx' is not built in");
}
#endif

}  // namespace prfaas::transport
