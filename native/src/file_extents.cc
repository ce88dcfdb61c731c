// Data extents of a sparse file (lseek SEEK_DATA/SEEK_HOLE). Guest RAM files on
// tmpfs are sparse until the guest touches a page; scanning a hole through mmap
// would make tmpfs allocate it, so scans visit only these extents.
#include "file_extents.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

// fileDataExtents(path) -> BigUint64Array [start, end)*; the whole file when the
// filesystem cannot tell (SEEK_DATA unsupported).
Napi::Value FileDataExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "fileDataExtents(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, "cannot open " + path + ": " + strerror(errno));
  off_t size = lseek(fd, 0, SEEK_END);
  std::vector<uint64_t> out;
  off_t pos = 0;
  bool supported = true;
  // Bounded: a file has at most size/4096 extents; cap the list anyway.
  while (pos < size && out.size() < 2 * 65536) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) supported = false;  // ENXIO: no data after pos
      break;
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) { supported = false; break; }
    out.push_back(static_cast<uint64_t>(data));
    out.push_back(static_cast<uint64_t>(hole));
    pos = hole;
  }
  if (pos < size && out.size() >= 2 * 65536) {
    out.push_back(static_cast<uint64_t>(pos));  // too fragmented: treat the rest as data
    out.push_back(static_cast<uint64_t>(size));
  }
  close(fd);
  if (!supported) out = {0, static_cast<uint64_t>(size < 0 ? 0 : size)};
  auto arr = Napi::BigUint64Array::New(env, out.size());
  for (size_t i = 0; i < out.size(); ++i) arr[i] = out[i];
  return arr;
}
