// A guest-virtual view of guest memory: an x86-64 page walker (4- and 5-level
// paging, 2 MiB and 1 GiB pages) over a PhysicalMemory, plus the bulk
// operations the kernel views need (long reads, bounded list walks) so that a
// scan costs a handful of calls from JavaScript instead of thousands.
// Every page-table entry comes from the guest: each step is bounds-checked
// and a bad entry is "not mapped", never a crash.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "physical_memory.h"

class AddressSpace : public Napi::ObjectWrap<AddressSpace> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit AddressSpace(const Napi::CallbackInfo& info);

  // Guest-physical address -> host pointer through the RAM layout; nullptr when not backed.
  const uint8_t* Phys(uint64_t pa, uint64_t len) const;
  // Guest-virtual -> guest-physical; false when not mapped.
  bool Translate(uint64_t va, uint64_t* pa);
  // Copies [va, va+len) into out; false (and *failed_va) at the first unmapped page.
  bool ReadVirtual(uint64_t va, uint64_t len, uint8_t* out, uint64_t* failed_va);

 private:
  struct Range {
    uint64_t gpa;
    uint64_t file_offset;
    uint64_t size;
  };

  Napi::Value TranslateJs(const Napi::CallbackInfo& info);
  Napi::Value ReadJs(const Napi::CallbackInfo& info);
  Napi::Value TryReadJs(const Napi::CallbackInfo& info);
  Napi::Value ReadPhysJs(const Napi::CallbackInfo& info);
  Napi::Value ReadGatherJs(const Napi::CallbackInfo& info);
  Napi::Value WalkListJs(const Napi::CallbackInfo& info);
  Napi::Value SetRootJs(const Napi::CallbackInfo& info);
  Napi::Value ClearCacheJs(const Napi::CallbackInfo& info);
  Napi::Value StatsJs(const Napi::CallbackInfo& info);
  Napi::Value SetLinearJs(const Napi::CallbackInfo& info);
  Napi::Value WalkRecordsJs(const Napi::CallbackInfo& info);
  Napi::Value GatherRecordsJs(const Napi::CallbackInfo& info);
  Napi::Value WalkXArrayJs(const Napi::CallbackInfo& info);

  // Fixed-stride records gathered from guest structures (see walkRecords in the .cc).
  struct RecordSpec {
    struct Field { uint32_t src, len, dst; };
    struct Deref { uint32_t ptr_at, src, len, dst; };
    std::vector<Field> fields;
    std::vector<Deref> derefs;
    uint32_t stride = 0;
    uint64_t floor = 0;
  };
  RecordSpec ParseRecordSpec(const Napi::Env& env, const Napi::CallbackInfo& info, size_t first);
  // Fills one record per node; with stop_at_failure, returns the index of the first node whose
  // fields are unreadable (and *failed_va), else n. Without it, such records get status 0.
  size_t FillRecords(const RecordSpec& spec, const uint64_t* nodes, size_t n, uint8_t* out, bool stop_at_failure, uint64_t* failed_va);
  // Host pointer for [va, va+len) when it lies in one page and is backed; nullptr otherwise.
  const uint8_t* HostPointer(uint64_t va, uint64_t len);
  // Bounded, cycle-checked list walk collecting container addresses (no gathering).
  void WalkNodes(uint64_t head, uint64_t link_offset, uint64_t max_nodes, std::vector<uint64_t>* nodes, std::string* error);

  bool Walk(uint64_t va, uint64_t* pa);
  bool ReadU64(uint64_t va, uint64_t* out);
  const PhysicalMemory* Memory() const;

  Napi::ObjectReference memory_ref_;
  PhysicalMemory* memory_ = nullptr;
  std::vector<Range> ranges_;
  // Regions the kernel maps linearly by construction (direct map, kernel image):
  // [va, va+size) -> [pa, pa+size) without a walk. Verified by the caller against walks.
  struct Linear {
    uint64_t va;
    uint64_t pa;
    uint64_t size;
  };
  std::vector<Linear> linear_;
  uint64_t root_ = 0;
  int levels_ = 4;
  // Page-granular translation cache; the guest changes its page tables, so the
  // owner clears it at the start of every scan (clearCache()).
  std::unordered_map<uint64_t, uint64_t> tlb_;
  // Host addresses of the links of the last walkRecords list (see WalkNodes): prefetch hints.
  std::vector<const uint8_t*> walk_hints_;
  uint64_t walk_hint_head_ = 0;
  uint64_t walk_hint_link_ = 0;
  uint64_t walks_ = 0;
  uint64_t hits_ = 0;
};
