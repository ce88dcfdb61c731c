// JavaScript binding of a guest's mapped RAM file (core/ram_file.h): the
// PhysicalMemory class of the addon. Argument and result conversion only.
#pragma once
#include <napi.h>

#include <memory>

#include "core/ram_file.h"

class PhysicalMemory : public Napi::ObjectWrap<PhysicalMemory> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit PhysicalMemory(const Napi::CallbackInfo& info);

  // For the AddressSpace binding, which keeps this object alive while it uses the file.
  const introvisor::RamFile* File() const { return file_.get(); }

 private:
  Napi::Value GetSize(const Napi::CallbackInfo& info);
  Napi::Value GetPath(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value IndexOf(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  std::unique_ptr<introvisor::RamFile> file_;
};
