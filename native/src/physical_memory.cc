#include "physical_memory.h"

#include "core/gathers.h"
#include "js_args.h"

using introvisor::Hex;
using introvisor::kMaxReadBytes;
using introvisor::ToU64;

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

// new PhysicalMemory(path): maps the file read-only; Error naming the file and the reason.
PhysicalMemory::PhysicalMemory(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PhysicalMemory>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "PhysicalMemory(path): path must be a string");
  std::string error;
  file_ = introvisor::RamFile::Open(info[0].As<Napi::String>().Utf8Value(), &error);
  if (!file_) throw Napi::Error::New(env, error);
}

Napi::Value PhysicalMemory::GetSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(file_->size())); }
Napi::Value PhysicalMemory::GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), file_->path()); }

// read(offset, length) -> Buffer (a copy: the guest may change the bytes after we look).
Napi::Value PhysicalMemory::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (file_->closed()) throw Napi::Error::New(env, "guest memory " + file_->path() + " is closed");
  if (info.Length() < 2) throw Napi::TypeError::New(env, "read(offset, length)");
  uint64_t off = ToU64(env, info[0], "offset");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "read of " + std::to_string(len) + " bytes exceeds the " + std::to_string(kMaxReadBytes) + "-byte limit");
  const uint8_t* p = file_->At(off, len);
  if (p == nullptr)
    throw Napi::RangeError::New(env, "physical range " + Hex(off) + "+" + Hex(len) + " is outside guest memory (size " + Hex(file_->size()) + ")");
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

// indexOf(pattern, from, to) -> offset of the first match starting in [from, to), or -1.
Napi::Value PhysicalMemory::IndexOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (file_->closed()) throw Napi::Error::New(env, "guest memory " + file_->path() + " is closed");
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "indexOf(pattern: Buffer, from?, to?)");
  auto pat = info[0].As<Napi::Buffer<uint8_t>>();
  if (pat.Length() == 0 || pat.Length() > 4096) throw Napi::RangeError::New(env, "pattern must be 1..4096 bytes");
  uint64_t from = info.Length() > 1 && !info[1].IsUndefined() ? ToU64(env, info[1], "from") : 0;
  uint64_t to = info.Length() > 2 && !info[2].IsUndefined() ? ToU64(env, info[2], "to") : file_->size();
  return Napi::Number::New(env, static_cast<double>(file_->IndexOf(pat.Data(), pat.Length(), from, to)));
}

Napi::Value PhysicalMemory::Close(const Napi::CallbackInfo& info) {
  file_->Close();
  return info.Env().Undefined();
}
