// Subprocess: runs another program (usually this binary with a subcommand) as a child process.
//
// stdout and stderr go to a log file. The destructor SIGKILLs a child that is still running, so a
// crashed parent test or launcher never leaves orphans behind. Not thread-safe; one owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas {

class Subprocess {
 public:
  // Starts `binary` with `args`; the child's output goes to `log_path` (truncated).
  Subprocess(std::string binary, std::vector<std::string> args, std::string log_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Waits for exit up to `timeout`; returns the raw waitpid status, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // "exited with code 3" / "killed by signal 9" / "running".
  std::string Describe();
  std::string Log() const;
  // The last `lines` lines of the log.
  std::string LogTail(int lines) const;
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// Path of the running executable (/proc/self/exe).
std::string SelfExecutable();

}  // namespace prfaas
