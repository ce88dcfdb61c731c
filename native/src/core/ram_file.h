// A read-only mapping of a guest's RAM file (QEMU memory-backend-file) or a raw
// dump. Offsets come from structures the guest controls, so every access is
// bounds-checked here; after Close() every access misses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace introvisor {

class RamFile {
 public:
  // The mapped file, or nullptr with *error naming the file and the reason.
  static std::unique_ptr<RamFile> Open(const std::string& path, std::string* error);
  ~RamFile();
  RamFile(const RamFile&) = delete;
  RamFile& operator=(const RamFile&) = delete;

  // Host pointer for [offset, offset+len); nullptr outside the file or once closed.
  const uint8_t* At(uint64_t offset, uint64_t len) const {
    if (base_ == nullptr || offset > size_ || len > size_ - offset) return nullptr;
    return base_ + offset;
  }
  // Offset of the first match of pattern starting in [from, to), or -1.
  int64_t IndexOf(const uint8_t* pattern, size_t pattern_len, uint64_t from, uint64_t to) const;
  void Close();
  bool closed() const { return base_ == nullptr; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  RamFile(std::string path, uint8_t* base, uint64_t size) : path_(std::move(path)), base_(base), size_(size) {}
  std::string path_;
  uint8_t* base_;
  uint64_t size_;
};

}  // namespace introvisor
