// Bulk reads the kernel views need, so that a scan costs a handful of calls from
// JavaScript instead of thousands: gathers at many addresses, list gathers (over
// the one WalkList), fixed-stride records with one level of pointer following,
// and XArray walks. Everything they touch is guest-controlled: each is bounded
// and an unreadable structure is reported, never followed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "list_walk.h"
#include "page_walker.h"

namespace introvisor {

// One read or one gathered record never copies more than this, and no gather returns more
// than kMaxGatherBytes: a guest-supplied length must not become an unbounded allocation.
constexpr uint64_t kMaxReadBytes = 64ull << 20;
constexpr uint64_t kMaxGatherBytes = 64ull << 20;
constexpr uint64_t kMaxListGatherLength = 1u << 16;

// len bytes at addrs[i]+offset into data[i*len]; ok[i] = 0 (and zeroes) where unreadable.
void ReadGather(PageWalker& mem, const uint64_t* addrs, size_t n, uint64_t offset, uint64_t len, uint8_t* data, uint8_t* ok);

struct ListGather {
  std::vector<uint64_t> nodes;  // container addresses
  std::vector<uint8_t> data;    // gather_len bytes per node
  std::string error;            // empty when the walk returned to the head
};
// WalkList, then gather_len bytes at node+gather_offset per node (gather_len <=
// kMaxListGatherLength; max_nodes is capped so the data stays within kMaxGatherBytes).
// A node whose bytes cannot be read ends the list there, with an error naming it.
ListGather GatherList(PageWalker& mem, ListHints* hints, uint64_t head, uint64_t link_offset, uint64_t max_nodes,
                      uint64_t gather_offset, uint64_t gather_len);

// ---- Fixed-stride records --------------------------------------------------------------
// The views read a handful of fields from thousands of structures (task_structs, struct
// pids), returned as one buffer of fixed-stride records. Record layout: bytes [0, 8) the
// structure's address, [8, 12) a status word: bit 0 = every field was readable, bit 1+k =
// deref k was followed; the caller's fields land at dst >= 16. A deref reads `len` bytes at
// (the u64 at record offset ptr_at) + src, only when that pointer is at or above `floor`
// (the kernel half): one level of pointer following (task->cred->uid, task->mm->pgd).
struct RecordSpec {
  struct Field { uint32_t src, len, dst; };
  struct Deref { uint32_t ptr_at, src, len, dst; };
  std::vector<Field> fields;
  std::vector<Deref> derefs;
  uint32_t stride = 0;
  uint64_t floor = 0;
};
constexpr size_t kMaxRecordFields = 64;
constexpr size_t kMaxRecordDerefs = 16;
// "" when every field and deref fits a record of a valid stride, else what does not.
std::string CheckRecordSpec(const RecordSpec& spec);

struct RecordWalk {
  std::vector<uint8_t> records;  // one stride per node
  std::string error;
};
// GatherList with one record per node (spec passes CheckRecordSpec).
RecordWalk WalkRecords(PageWalker& mem, ListHints* hints, uint64_t head, uint64_t link_offset, uint64_t max_nodes,
                       const RecordSpec& spec);
// One record per address into out (n * stride bytes), in order; an unreadable structure's
// record has status 0 and zeroed fields.
void GatherRecords(PageWalker& mem, const RecordSpec& spec, const uint64_t* addrs, size_t n, uint8_t* out);

// ---- XArrays ---------------------------------------------------------------------------
struct XArrayLimits {
  uint64_t max_depth;
  uint64_t max_nodes;
  uint64_t max_entries;
};
struct XArrayWalk {
  std::vector<uint64_t> indices;
  std::vector<uint64_t> entries;
  std::vector<std::string> errors;  // [where, message]*
};
// The pointer entries of the XArray whose xa_head is `head`, with their indices, depth first
// in index order. Internal entries (low bits 10) above 4096 are nodes: each must be a kernel
// pointer (>= floor, 8-aligned), readable, with a shift that is a multiple of 6 up to 30;
// depth, node count and entry count are bounded. Value entries (low bit 1) and sibling/retry
// entries are skipped. Error places start with `where`.
XArrayWalk WalkXArray(PageWalker& mem, uint64_t head, uint64_t shift_offset, uint64_t slots_offset, XArrayLimits limits,
                      uint64_t floor, const std::string& where);

}  // namespace introvisor
