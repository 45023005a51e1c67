// Changing a worker's role from the router: the worker drains what it is doing (up to a deadline)
// and switches role in place through its WorkerAdmin.SetRole RPC; on success the router's
// directory records the new role so routing uses it at once. Shared by the admin API
// (`prfaasctl role`) and the long-timescale rebalancer.
#pragma once

#include <chrono>
#include <string_view>

#include "common/status.h"
#include "router/registry/directory.h"

namespace prfaas::router {

// Blocks for at most drain_deadline + 30 s. Errors name the worker and carry the RPC status.
Status SwitchWorkerRole(WorkerDirectory& directory, std::string_view worker, WorkerRole role,
                        std::chrono::seconds drain_deadline);

}  // namespace prfaas::router
