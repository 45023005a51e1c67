// Minimal blocking HTTP/1.1 client over a real 127.0.0.1 socket, for router tests. Every request
// asks for Connection: close and reads to EOF.
#pragma once

#include <string>

namespace prfaas::testing {

struct HttpReply {
  int status = 0;
  std::string headers;  // raw header block
  std::string body;
};

HttpReply HttpCall(int port, const std::string& method, const std::string& path,
                   const std::string& body = {}, const std::string& extra_headers = {});

// Opens a connection and sends a request without reading the reply; returns the socket fd.
int HttpSend(int port, const std::string& method, const std::string& path, const std::string& body,
             const std::string& extra_headers = {});

}  // namespace prfaas::testing
