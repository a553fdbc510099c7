// Links the installed subinterp::core and prints its version.
#include <subinterp/subinterp.hpp>

#include <cstdio>

int main() {
  std::printf("subinterp %s\n", subinterp::version());
  return 0;
}
