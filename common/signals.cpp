#include "common/signals.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace prfaas {
namespace {

int g_pipe[2] = {-1, -1};

void OnSignal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] auto n = write(g_pipe[1], &b, 1);
  errno = saved;
}

}  // namespace

void ShutdownSignals::Install() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (pipe(g_pipe) != 0) return;
    fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  });
}

int ShutdownSignals::Wait() {
  unsigned char b = 0;
  for (;;) {
    ssize_t n = read(g_pipe[0], &b, 1);
    if (n == 1) return b;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

void ShutdownSignals::Wake() {
  unsigned char b = 0;
  [[maybe_unused]] auto n = write(g_pipe[1], &b, 1);
}

}  // namespace prfaas
