// JavaScript binding of the page walker and its gathers (core/page_walker.h,
// core/list_walk.h, core/gathers.h): the AddressSpace class of the addon.
// Argument and result conversion only; the walks live in the core.
#pragma once
#include <napi.h>

#include <memory>

#include "core/list_walk.h"
#include "core/page_walker.h"

class AddressSpace : public Napi::ObjectWrap<AddressSpace> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit AddressSpace(const Napi::CallbackInfo& info);

 private:
  Napi::Value TranslateJs(const Napi::CallbackInfo& info);
  Napi::Value ReadJs(const Napi::CallbackInfo& info);
  Napi::Value TryReadJs(const Napi::CallbackInfo& info);
  Napi::Value ReadPhysJs(const Napi::CallbackInfo& info);
  Napi::Value ReadGatherJs(const Napi::CallbackInfo& info);
  Napi::Value WalkListJs(const Napi::CallbackInfo& info);
  Napi::Value ClearCacheJs(const Napi::CallbackInfo& info);
  Napi::Value SetLinearJs(const Napi::CallbackInfo& info);
  Napi::Value WalkRecordsJs(const Napi::CallbackInfo& info);
  Napi::Value GatherRecordsJs(const Napi::CallbackInfo& info);
  Napi::Value WalkXArrayJs(const Napi::CallbackInfo& info);

  // Keeps the PhysicalMemory (and so the RamFile the walker reads) alive.
  Napi::ObjectReference memory_ref_;
  std::unique_ptr<introvisor::PageWalker> walker_;
  introvisor::ListHints hints_;
};
