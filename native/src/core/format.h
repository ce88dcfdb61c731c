// Message formatting shared by the core and the bindings.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace introvisor {

inline std::string Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace introvisor
