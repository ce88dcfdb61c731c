#include "page_walker.h"

#include <cstring>


namespace introvisor {
namespace {

// Bits 51:12 of a page-table entry or CR3 hold the next table's frame.
constexpr uint64_t kFrameMask = 0x000ffffffffff000ull;
constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kPageSize = 1ull << 7;

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

}  // namespace

std::string CheckRamLayout(const std::vector<RamRange>& ranges) {
  if (ranges.empty() || ranges.size() > kMaxRamRanges) return "layout must hold 1..64 [gpa, fileOffset, size] triples";
  for (size_t i = 0; i < ranges.size(); ++i) {
    const RamRange& r = ranges[i];
    if (r.size == 0 || r.gpa + r.size < r.gpa || r.file_offset + r.size < r.file_offset)
      return "layout range " + std::to_string(i) + " is empty or wraps";
  }
  return "";
}

std::string CheckLinearRegions(const std::vector<LinearRegion>& regions) {
  if (regions.size() > kMaxLinearRegions) return "up to 8 [va, pa, size] triples";
  for (const LinearRegion& l : regions)
    if (l.va + l.size < l.va || l.pa + l.size < l.pa) return "region wraps";
  return "";
}

PageWalker::PageWalker(const RamFile* ram, std::vector<RamRange> ranges, uint64_t root, int levels)
    : ram_(ram), ranges_(std::move(ranges)), root_(root & kFrameMask), levels_(levels) {}

bool PageWalker::Walk(uint64_t va, uint64_t* pa) const {
  // Canonical form: bits above the top translated bit copy it.
  int top = levels_ == 5 ? 56 : 47;
  uint64_t upper = va >> top;
  uint64_t ones = (~0ull) >> top;
  if (upper != 0 && upper != ones) return false;
  uint64_t table = root_;
  for (int level = levels_; level >= 1; --level) {
    int shift = 12 + 9 * (level - 1);
    uint64_t index = (va >> shift) & 0x1ff;
    const uint8_t* p = Phys(table + index * 8, 8);
    if (p == nullptr) return false;
    uint64_t entry = LoadU64(p);
    if ((entry & kPresent) == 0) return false;
    // PS at the PDPT (1 GiB) and PD (2 MiB) levels ends the walk early.
    if ((level == 3 || level == 2) && (entry & kPageSize) != 0) {
      uint64_t page_mask = (1ull << shift) - 1;
      *pa = (entry & kFrameMask & ~page_mask) | (va & page_mask);
      return true;
    }
    table = entry & kFrameMask;
  }
  *pa = table | (va & 0xfff);
  return true;
}

bool PageWalker::Translate(uint64_t va, uint64_t* pa) {
  for (const LinearRegion& l : linear_) {
    if (va >= l.va && va - l.va < l.size) {
      *pa = l.pa + (va - l.va);
      return true;
    }
  }
  uint64_t page = va & ~0xfffull;
  TlbEntry& e = tlb_[TlbSlot(page)];
  if (e.generation == generation_ && e.page == page) {
    *pa = e.frame | (va & 0xfff);
    return true;
  }
  uint64_t frame;
  if (!Walk(page, &frame)) return false;
  e = TlbEntry{page, frame, generation_};
  *pa = frame | (va & 0xfff);
  return true;
}

bool PageWalker::ReadVirtual(uint64_t va, uint64_t len, uint8_t* out, uint64_t* failed_va) {
  uint64_t done = 0;
  while (done < len) {
    uint64_t cur = va + done;
    uint64_t chunk = 0x1000 - (cur & 0xfff);
    if (chunk > len - done) chunk = len - done;
    uint64_t pa;
    const uint8_t* src = Translate(cur, &pa) ? Phys(pa, chunk) : nullptr;
    if (src == nullptr) {
      *failed_va = cur;
      return false;
    }
    memcpy(out + done, src, chunk);
    done += chunk;
  }
  return true;
}

bool PageWalker::ReadU64(uint64_t va, uint64_t* out) {
  uint8_t buf[8];
  uint64_t failed;
  if (!ReadVirtual(va, 8, buf, &failed)) return false;
  memcpy(out, buf, 8);
  return true;
}

}  // namespace introvisor
