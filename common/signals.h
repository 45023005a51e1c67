// Turns SIGINT / SIGTERM into an ordinary event a thread can wait for.
//
// Install() sets handlers that only write the signal number to a self-pipe (async-signal-safe), so
// it works whichever thread the kernel picks, including threads third-party libraries started
// before main(). One thread calls Wait() and runs the orderly shutdown; Wake() releases it when
// shutdown starts for another reason (returns 0 then).
#pragma once

namespace prfaas {

class ShutdownSignals {
 public:
  // Installs the handlers (once per process; later calls are no-ops).
  static void Install();
  // Blocks until a signal arrives (returns its number) or Wake() is called (returns 0).
  static int Wait();
  static void Wake();
};

}  // namespace prfaas
