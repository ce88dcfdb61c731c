// introvisor native core: what JavaScript cannot do well (mmap of guest RAM,
// and later page walks and ioctls). Kept small; every entry point checks its bounds.
#include <napi.h>

#include "address_space.h"
#include "file_extents.h"
#include "physical_memory.h"
#include "write_trap.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("PhysicalMemory", PhysicalMemory::Init(env));
  exports.Set("AddressSpace", AddressSpace::Init(env));
  exports.Set("WriteTrap", WriteTrap::Init(env));
  exports.Set("fileDataExtents", Napi::Function::New(env, FileDataExtents, "fileDataExtents"));
  return exports;
}

NODE_API_MODULE(introvisor, Init)
