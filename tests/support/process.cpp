#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace prfaas::testing {

std::optional<nlohmann::json> WaitForReadyFile(const std::string& path,
                                               std::chrono::milliseconds timeout,
                                               ChildProcess* child) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream f(path);
    if (f) {
      std::stringstream ss;
      ss << f.rdbuf();
      auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
      if (!j.is_discarded()) return j;
    }
    if (child && !child->Running()) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

HttpResult HttpGet(const std::string& host, int port, const std::string& target) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  HttpResult r;
  try {
    asio::io_context io;
    boost::beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address(host), port));
    http::request<http::empty_body> req(http::verb::get, target, 11);
    req.set(http::field::host, host);
    http::write(stream, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    r.status = res.result_int();
    r.body = res.body();
  } catch (const std::exception&) {
    r.status = 0;
  }
  return r;
}

std::optional<double> MetricValue(const std::string& exposition, const std::string& name,
                                  const std::string& labels) {
  std::istringstream is(exposition);
  for (std::string line; std::getline(is, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    if (!labels.empty()) {
      auto close = line.find('}');
      if (next != '{' || close == std::string::npos) continue;
      if (line.substr(name.size(), close - name.size()).find(labels) == std::string::npos) continue;
    }
    auto sp = line.rfind(' ');
    return std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return std::nullopt;
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  char* d = mkdtemp(tmpl.data());
  return d ? std::string(d) : std::string();
}

std::string PrfaasBinary() {
  return std::string(PRFAAS_BINARY_DIR) + "/apps/prfaas";
}

}  // namespace prfaas::testing
