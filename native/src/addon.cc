// introvisor native addon: what JavaScript cannot do well (mmap of guest RAM,
// page walks and bulk gathers, the write trap's ioctls). The walker itself is
// plain C++ in core/ (no N-API); the classes here only convert arguments and results.
#include <napi.h>

#include "address_space.h"
#include "file_extents.h"
#include "peer_cred.h"
#include "physical_memory.h"
#include "write_trap.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("PhysicalMemory", PhysicalMemory::Init(env));
  exports.Set("AddressSpace", AddressSpace::Init(env));
  exports.Set("WriteTrap", WriteTrap::Init(env));
  exports.Set("fileDataExtents", Napi::Function::New(env, FileDataExtents, "fileDataExtents"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  return exports;
}

NODE_API_MODULE(introvisor, Init)
