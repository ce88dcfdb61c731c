// A read-only view of a guest's physical memory: a QEMU memory-backend-file
// or a raw dump, mapped once. Every access is bounds-checked here, because
// offsets come from structures the guest controls.
#pragma once
#include <napi.h>
#include <cstddef>
#include <cstdint>
#include <string>

class PhysicalMemory : public Napi::ObjectWrap<PhysicalMemory> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit PhysicalMemory(const Napi::CallbackInfo& info);
  ~PhysicalMemory() override;

  // For other native parts (page walks): nullptr when [offset, offset+len) is not mapped.
  const uint8_t* At(uint64_t offset, uint64_t len) const;
  uint64_t Size() const { return size_; }

 private:
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value GetPath(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value IndexOf(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void Unmap();

  std::string path_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
};
