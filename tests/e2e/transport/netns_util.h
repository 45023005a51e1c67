// Two network namespaces joined by a veth pair, the sender's side shaped with tbf. Used by the
// transport e2e test and benchmark. Needs root and iproute2; the namespaces get unique names and
// are deleted in the destructor (deleting a namespace also deletes its veth end).
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace prfaas::transport::testing {

class ShapedNetns {
 public:
  // rate: tc syntax, e.g. "1gbit".
  explicit ShapedNetns(const std::string& rate) {
    RemoveStale();
    std::random_device rd;
    const std::string tag = std::to_string(getpid()) + "x" + std::to_string(rd() % 100000);
    ns_a_ = "prfaas_a_" + tag;
    ns_b_ = "prfaas_b_" + tag;
    const std::string va = "pfa" + tag.substr(0, 11), vb = "pfb" + tag.substr(0, 11);
    const int subnet = 16 + static_cast<int>(rd() % 200);
    addr_a_ = "10.233." + std::to_string(subnet) + ".1";
    addr_b_ = "10.233." + std::to_string(subnet) + ".2";
    ok_ = Run("ip netns add " + ns_a_) && (created_a_ = true) && Run("ip netns add " + ns_b_) &&
          (created_b_ = true) && Run("ip link add " + va + " type veth peer name " + vb) &&
          Run("ip link set " + va + " netns " + ns_a_) &&
          Run("ip link set " + vb + " netns " + ns_b_) &&
          Run("ip -n " + ns_a_ + " addr add " + addr_a_ + "/24 dev " + va) &&
          Run("ip -n " + ns_b_ + " addr add " + addr_b_ + "/24 dev " + vb) &&
          Run("ip -n " + ns_a_ + " link set " + va + " up") &&
          Run("ip -n " + ns_b_ + " link set " + vb + " up") &&
          Run("ip -n " + ns_a_ + " link set lo up") && Run("ip -n " + ns_b_ + " link set lo up") &&
          Run("tc -n " + ns_a_ + " qdisc add dev " + va + " root tbf rate " + rate +
              " burst 4mb latency 100ms");
  }
  ~ShapedNetns() {
    if (created_a_) Run("ip netns del " + ns_a_);
    if (created_b_) Run("ip netns del " + ns_b_);
  }
  ShapedNetns(const ShapedNetns&) = delete;
  ShapedNetns& operator=(const ShapedNetns&) = delete;

  bool ok() const { return ok_; }
  const std::string& addr_a() const { return addr_a_; }  // sender side (shaped egress)
  const std::string& addr_b() const { return addr_b_; }  // receiver side
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }

  // Runs fn on a fresh thread that has entered namespace `ns`; sockets it creates live there.
  template <typename Fn>
  static bool RunIn(const std::string& ns, Fn&& fn) {
    bool entered = false;
    std::thread t([&] {
      int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return;
      entered = ::setns(fd, CLONE_NEWNET) == 0;
      ::close(fd);
      if (entered) fn();
    });
    t.join();
    return entered;
  }

  static bool Available() {
    if (geteuid() != 0) return false;
    return std::system("ip netns list >/dev/null 2>&1") == 0 &&
           std::system("tc -V >/dev/null 2>&1") == 0;
  }

 private:
  // Deletes namespaces left by runs that were killed before their destructor ran (the name
  // carries the creating pid).
  static void RemoveStale() {
    FILE* f = popen("ip netns list 2>/dev/null", "r");
    if (!f) return;
    char line[256];
    std::vector<std::string> dead;
    while (std::fgets(line, sizeof line, f)) {
      std::string name(line);
      name = name.substr(0, name.find_first_of(" \n"));
      if (name.rfind("prfaas_a_", 0) != 0 && name.rfind("prfaas_b_", 0) != 0) continue;
      const long pid = std::strtol(name.c_str() + 9, nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
        dead.push_back(name);
    }
    pclose(f);
    for (const auto& n : dead) Run("ip netns del " + n);
  }

  static bool Run(const std::string& cmd) {
    return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
  }

  std::string ns_a_, ns_b_, addr_a_, addr_b_;
  bool created_a_ = false, created_b_ = false, ok_ = false;
};

}  // namespace prfaas::transport::testing
