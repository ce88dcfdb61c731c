// Guest-virtual memory: an x86-64 page walker (4- and 5-level paging, 2 MiB and
// 1 GiB pages) over a RamFile and the guest's RAM layout. Every page-table entry
// comes from the guest: each step is bounds-checked and a bad entry is "not
// mapped", never a crash. No JavaScript here: native/src/address_space.cc binds it.
#pragma once
#include <cstdint>
#include <string>
#include <array>
#include <vector>

#include "ram_file.h"

namespace introvisor {

// Guest-physical [gpa, gpa+size) is file [file_offset, file_offset+size) (QEMU puts RAM
// above the PCI hole at 4 GiB, so the two differ).
struct RamRange {
  uint64_t gpa;
  uint64_t file_offset;
  uint64_t size;
};

// A region the kernel maps linearly by construction (direct map, kernel image):
// [va, va+size) -> [pa, pa+size) without a walk. The caller verifies it against walks.
struct LinearRegion {
  uint64_t va;
  uint64_t pa;
  uint64_t size;
};

constexpr size_t kMaxRamRanges = 64;
constexpr size_t kMaxLinearRegions = 8;

// "" when the layout is usable, else what is wrong with it.
std::string CheckRamLayout(const std::vector<RamRange>& ranges);
std::string CheckLinearRegions(const std::vector<LinearRegion>& regions);

class PageWalker {
 public:
  // `ram` must outlive the walker (the binding keeps its owner alive); ranges pass
  // CheckRamLayout; levels is 4 or 5; root is a page-table frame (low bits are dropped).
  PageWalker(const RamFile* ram, std::vector<RamRange> ranges, uint64_t root, int levels);

  // Guest-physical -> host pointer through the RAM layout; nullptr when [pa, pa+len) is not backed.
  const uint8_t* Phys(uint64_t pa, uint64_t len) const {
    for (const RamRange& r : ranges_) {
      if (pa >= r.gpa && pa - r.gpa < r.size) {
        uint64_t off = pa - r.gpa;
        if (len > r.size - off) return nullptr;
        return ram_->At(r.file_offset + off, len);
      }
    }
    return nullptr;
  }
  // Guest-virtual -> guest-physical; false when not mapped.
  bool Translate(uint64_t va, uint64_t* pa);
  // Copies [va, va+len) into out; false (and *failed_va) at the first unmapped page.
  bool ReadVirtual(uint64_t va, uint64_t len, uint8_t* out, uint64_t* failed_va);
  bool ReadU64(uint64_t va, uint64_t* out);
  // Host pointer for [va, va+len) when it lies in one page and is backed; nullptr otherwise.
  const uint8_t* HostPointer(uint64_t va, uint64_t len) {
    if ((va & 0xfff) + len > 0x1000) return nullptr;
    uint64_t pa;
    return Translate(va, &pa) ? Phys(pa, len) : nullptr;
  }

  // The guest changes its page tables: the owner clears the cache at the start of every scan.
  // O(1): entries of an older generation are misses (a scan at 10 Hz must not pay for the last one's entries).
  void ClearCache() {
    if (++generation_ == 0) {
      tlb_.fill(TlbEntry{});
      generation_ = 1;
    }
  }
  // Replaces the linear shortcuts (regions pass CheckLinearRegions; empty: walk everything).
  void SetLinear(std::vector<LinearRegion> regions) { linear_ = std::move(regions); }

 private:
  bool Walk(uint64_t va, uint64_t* pa) const;

  const RamFile* ram_;
  std::vector<RamRange> ranges_;
  std::vector<LinearRegion> linear_;
  uint64_t root_;
  int levels_;
  // Page-granular translation cache, page -> frame: direct-mapped, fixed size (a hostile guest's
  // mappings can evict entries, never grow memory), valid only in the generation that filled it.
  struct TlbEntry {
    uint64_t page = 0;
    uint64_t frame = 0;
    uint32_t generation = 0;
  };
  static constexpr size_t kTlbEntries = 4096;
  static size_t TlbSlot(uint64_t page) { return ((page >> 12) ^ (page >> 24)) & (kTlbEntries - 1); }
  std::array<TlbEntry, kTlbEntries> tlb_{};
  uint32_t generation_ = 1;
};

}  // namespace introvisor
