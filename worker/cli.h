// `prfaas worker`: runs one worker process (see worker/worker.h).
#pragma once

namespace CLI {
class App;
}

namespace prfaas::worker {

void RegisterWorkerCommand(CLI::App& app);

}  // namespace prfaas::worker
