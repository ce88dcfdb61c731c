#include "physical_memory.h"
#include "js_args.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace {

using introvisor::Hex;
using introvisor::ToU64;

// One read never copies more than this: a guest-supplied length must not
// become an unbounded allocation in the supervisor.
constexpr uint64_t kMaxReadBytes = 64ull << 20;

}  // namespace

Napi::Function PhysicalMemory::Init(Napi::Env env) {
  return DefineClass(env, "PhysicalMemory",
                     {
                         InstanceAccessor<&PhysicalMemory::GetSize>("size"),
                         InstanceAccessor<&PhysicalMemory::GetPath>("path"),
                         InstanceMethod<&PhysicalMemory::Read>("read"),
                         InstanceMethod<&PhysicalMemory::IndexOf>("indexOf"),
                         InstanceMethod<&PhysicalMemory::Close>("close"),
                     });
}

PhysicalMemory::PhysicalMemory(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PhysicalMemory>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "PhysicalMemory(path): path must be a string");
  path_ = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, "cannot open guest memory " + path_ + ": " + strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    throw Napi::Error::New(env, "cannot stat guest memory " + path_ + ": " + strerror(e));
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
    close(fd);
    throw Napi::Error::New(env, "guest memory " + path_ + " is not a non-empty regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) throw Napi::Error::New(env, "cannot map guest memory " + path_ + ": " + strerror(e));
  base_ = static_cast<uint8_t*>(p);
}

PhysicalMemory::~PhysicalMemory() { Unmap(); }

void PhysicalMemory::Unmap() {
  if (base_ != nullptr) munmap(base_, size_);
  base_ = nullptr;
}

const uint8_t* PhysicalMemory::At(uint64_t offset, uint64_t len) const {
  if (base_ == nullptr || offset > size_ || len > size_ - offset) return nullptr;
  return base_ + offset;
}

Napi::Value PhysicalMemory::GetSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(size_)); }
Napi::Value PhysicalMemory::GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

// read(offset, length) -> Buffer (a copy: the guest may change the bytes after we look).
Napi::Value PhysicalMemory::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (base_ == nullptr) throw Napi::Error::New(env, "guest memory " + path_ + " is closed");
  if (info.Length() < 2) throw Napi::TypeError::New(env, "read(offset, length)");
  uint64_t off = ToU64(env, info[0], "offset");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "read of " + std::to_string(len) + " bytes exceeds the " + std::to_string(kMaxReadBytes) + "-byte limit");
  const uint8_t* p = At(off, len);
  if (p == nullptr)
    throw Napi::RangeError::New(env, "physical range " + Hex(off) + "+" + Hex(len) + " is outside guest memory (size " + Hex(size_) + ")");
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

// indexOf(pattern, from, to) -> offset of the first match starting in [from, to), or -1.
Napi::Value PhysicalMemory::IndexOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (base_ == nullptr) throw Napi::Error::New(env, "guest memory " + path_ + " is closed");
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "indexOf(pattern: Buffer, from?, to?)");
  auto pat = info[0].As<Napi::Buffer<uint8_t>>();
  if (pat.Length() == 0 || pat.Length() > 4096) throw Napi::RangeError::New(env, "pattern must be 1..4096 bytes");
  uint64_t from = info.Length() > 1 && !info[1].IsUndefined() ? ToU64(env, info[1], "from") : 0;
  uint64_t to = info.Length() > 2 && !info[2].IsUndefined() ? ToU64(env, info[2], "to") : size_;
  if (to > size_) to = size_;
  if (from >= to) return Napi::Number::New(env, -1);
  uint64_t end = to + pat.Length() - 1;
  if (end > size_) end = size_;
  const void* hit = memmem(base_ + from, end - from, pat.Data(), pat.Length());
  if (hit == nullptr) return Napi::Number::New(env, -1);
  return Napi::Number::New(env, static_cast<double>(static_cast<const uint8_t*>(hit) - base_));
}

Napi::Value PhysicalMemory::Close(const Napi::CallbackInfo& info) {
  Unmap();
  return info.Env().Undefined();
}
