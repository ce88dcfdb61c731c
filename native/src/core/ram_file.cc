#include "ram_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace introvisor {

std::unique_ptr<RamFile> RamFile::Open(const std::string& path, std::string* error) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open guest memory " + path + ": " + strerror(errno);
    return nullptr;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    *error = "cannot stat guest memory " + path + ": " + strerror(e);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
    close(fd);
    *error = "guest memory " + path + " is not a non-empty regular file";
    return nullptr;
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    *error = "cannot map guest memory " + path + ": " + strerror(e);
    return nullptr;
  }
  return std::unique_ptr<RamFile>(new RamFile(path, static_cast<uint8_t*>(p), size));
}

RamFile::~RamFile() { Close(); }

void RamFile::Close() {
  if (base_ != nullptr) munmap(base_, size_);
  base_ = nullptr;
}

int64_t RamFile::IndexOf(const uint8_t* pattern, size_t pattern_len, uint64_t from, uint64_t to) const {
  if (base_ == nullptr || pattern_len == 0) return -1;
  if (to > size_) to = size_;
  if (from >= to) return -1;
  // A match may start anywhere in [from, to) and run past `to`, but not past the file.
  uint64_t end = to + pattern_len - 1;
  if (end > size_) end = size_;
  const void* hit = memmem(base_ + from, end - from, pattern, pattern_len);
  if (hit == nullptr) return -1;
  return static_cast<const uint8_t*>(hit) - base_;
}

}  // namespace introvisor
