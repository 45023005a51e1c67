// prfaasctl entry point; everything lives in router/ctl/ctl.h.
#include <iostream>

#include "router/ctl/ctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return prfaas::router::RunCtl(args, std::cout, std::cerr);
}
