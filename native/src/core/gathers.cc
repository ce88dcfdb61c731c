#include "gathers.h"

#include <cstring>

#include "format.h"

namespace introvisor {
namespace {

constexpr uint32_t kRecordHeader = 16;
constexpr uint32_t kMaxRecordStride = 4096;
constexpr size_t kRecordBlock = 32;  // records whose loads are prefetched together

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

// max_nodes such that max_nodes * per_node stays within kMaxGatherBytes.
uint64_t CapNodes(uint64_t max_nodes, uint64_t per_node) {
  if (max_nodes > kMaxListNodes) max_nodes = kMaxListNodes;
  if (per_node * max_nodes > kMaxGatherBytes) max_nodes = kMaxGatherBytes / (per_node == 0 ? 1 : per_node);
  return max_nodes;
}

// The few pages one structure spans (a task_struct is ~10 KiB): translated once per record.
struct PageMemo {
  uint64_t page[4];
  const uint8_t* host[4];
  int n = 0;
};

inline void CopySmall(uint8_t* dst, const uint8_t* src, uint32_t len) {
  switch (len) {
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, len);
  }
}

// Fills one record per node into out (zero-filled by the caller); with stop_at_failure,
// returns the index of the first node whose fields are unreadable (and *failed_va), else n.
// Without it, such records get status 0.
size_t FillRecords(PageWalker& mem, const RecordSpec& spec, const uint64_t* nodes, size_t n, uint8_t* out,
                   bool stop_at_failure, uint64_t* failed_va) {
  const size_t nf = spec.fields.size();
  const size_t nd = spec.derefs.size();
  // Software pipeline over blocks of kRecordBlock records: the host addresses of block b+1's
  // fields are found and prefetched before block b's fields are copied, and block b's derefs
  // are prefetched before block b-1's are copied, so each block's cache misses overlap with
  // other work instead of stalling one after another.
  std::vector<const uint8_t*> field_src[2], deref_src[2];
  for (int i = 0; i < 2; ++i) {
    field_src[i].resize(kRecordBlock * nf);
    deref_src[i].resize(kRecordBlock * nd);
  }
  // Host address of [va, va+len) through the record's page memo; nullptr when the range
  // crosses a page or is not backed (the copy then falls back to ReadVirtual).
  auto host = [&](PageMemo& m, uint64_t va, uint32_t len) -> const uint8_t* {
    uint64_t off = va & 0xfff;
    if (off + len > 0x1000) return nullptr;
    uint64_t page = va - off;
    for (int i = 0; i < m.n; ++i)
      if (m.page[i] == page) return m.host[i] != nullptr ? m.host[i] + off : nullptr;
    const uint8_t* h = mem.HostPointer(page, 0x1000);
    if (m.n < 4) {
      m.page[m.n] = page;
      m.host[m.n] = h;
      ++m.n;
    }
    return h != nullptr ? h + off : nullptr;
  };
  auto prep_fields = [&](size_t b, size_t e, const uint8_t** src) {
    for (size_t i = b; i < e; ++i) {
      PageMemo memo;
      for (size_t k = 0; k < nf; ++k) {
        const uint8_t* p = host(memo, nodes[i] + spec.fields[k].src, spec.fields[k].len);
        if (p != nullptr) __builtin_prefetch(p);
        src[(i - b) * nf + k] = p;
      }
    }
  };
  // Copies the fields of records [b, e); returns the first unreadable one under stop_at_failure, else e.
  auto copy_fields = [&](size_t b, size_t e, const uint8_t* const* src) -> size_t {
    for (size_t i = b; i < e; ++i) {
      uint8_t* rec = out + i * spec.stride;
      memcpy(rec, &nodes[i], 8);
      bool good = true;
      for (size_t k = 0; k < nf && good; ++k) {
        const RecordSpec::Field& f = spec.fields[k];
        const uint8_t* p = src[(i - b) * nf + k];
        if (p != nullptr) CopySmall(rec + f.dst, p, f.len);
        else good = mem.ReadVirtual(nodes[i] + f.src, f.len, rec + f.dst, failed_va);  // crosses a page, or unmapped
      }
      if (!good) {
        if (stop_at_failure) return i;
        memset(rec + 8, 0, spec.stride - 8);
        continue;
      }
      rec[8] = 1;
    }
    return e;
  };
  auto prep_derefs = [&](size_t b, size_t e, const uint8_t** src) {
    for (size_t i = b; i < e; ++i) {
      const uint8_t* rec = out + i * spec.stride;
      for (size_t k = 0; k < nd; ++k) {
        const RecordSpec::Deref& d = spec.derefs[k];
        const uint8_t* p = nullptr;
        if (rec[8] & 1) {
          uint64_t ptr = LoadU64(rec + d.ptr_at);
          if (ptr >= spec.floor) p = mem.HostPointer(ptr + d.src, d.len);
          if (p != nullptr) __builtin_prefetch(p);
        }
        src[(i - b) * nd + k] = p;
      }
    }
  };
  auto copy_derefs = [&](size_t b, size_t e, const uint8_t* const* src) {
    for (size_t i = b; i < e; ++i) {
      uint8_t* rec = out + i * spec.stride;
      if ((rec[8] & 1) == 0) continue;
      uint32_t status = 1;
      for (size_t k = 0; k < nd; ++k) {
        const RecordSpec::Deref& d = spec.derefs[k];
        const uint8_t* p = src[(i - b) * nd + k];
        bool good = p != nullptr;
        if (good) {
          CopySmall(rec + d.dst, p, d.len);
        } else {
          uint64_t ptr = LoadU64(rec + d.ptr_at), ignored;
          good = ptr >= spec.floor && mem.ReadVirtual(ptr + d.src, d.len, rec + d.dst, &ignored);
          if (!good) memset(rec + d.dst, 0, d.len);
        }
        if (good) status |= 1u << (1 + k);
      }
      memcpy(rec + 8, &status, 4);
    }
  };
  const size_t blocks = (n + kRecordBlock - 1) / kRecordBlock;
  auto first = [&](size_t blk) { return blk * kRecordBlock; };
  auto last = [&](size_t blk) { return first(blk) + kRecordBlock < n ? first(blk) + kRecordBlock : n; };
  if (blocks > 0) prep_fields(first(0), last(0), field_src[0].data());
  for (size_t blk = 0; blk < blocks; ++blk) {
    if (blk + 1 < blocks) prep_fields(first(blk + 1), last(blk + 1), field_src[(blk + 1) & 1].data());
    size_t stop = copy_fields(first(blk), last(blk), field_src[blk & 1].data());
    prep_derefs(first(blk), stop, deref_src[blk & 1].data());
    if (blk > 0) copy_derefs(first(blk - 1), last(blk - 1), deref_src[(blk - 1) & 1].data());
    if (stop < last(blk)) {  // an unreadable record under stop_at_failure: finish the ones before it
      copy_derefs(first(blk), stop, deref_src[blk & 1].data());
      return stop;
    }
  }
  if (blocks > 0) copy_derefs(first(blocks - 1), last(blocks - 1), deref_src[(blocks - 1) & 1].data());
  return n;
}

}  // namespace

void ReadGather(PageWalker& mem, const uint64_t* addrs, size_t n, uint64_t offset, uint64_t len, uint8_t* data, uint8_t* ok) {
  for (size_t i = 0; i < n; ++i) {
    uint64_t failed;
    bool good = mem.ReadVirtual(addrs[i] + offset, len, data + i * len, &failed);
    if (!good) memset(data + i * len, 0, len);
    ok[i] = good ? 1 : 0;
  }
}

ListGather GatherList(PageWalker& mem, ListHints* hints, uint64_t head, uint64_t link_offset, uint64_t max_nodes,
                      uint64_t gather_offset, uint64_t gather_len) {
  ListGather out;
  WalkList(mem, head, link_offset, CapNodes(max_nodes, gather_len), hints, &out.nodes, &out.error);
  if (gather_len == 0) return out;
  out.data.resize(out.nodes.size() * gather_len);
  for (size_t i = 0; i < out.nodes.size(); ++i) {
    uint64_t failed;
    if (!mem.ReadVirtual(out.nodes[i] + gather_offset, gather_len, out.data.data() + i * gather_len, &failed)) {
      out.error = "node " + Hex(out.nodes[i]) + ": address " + Hex(failed) + " is not mapped";
      out.nodes.resize(i);
      out.data.resize(i * gather_len);
      break;
    }
  }
  return out;
}

std::string CheckRecordSpec(const RecordSpec& spec) {
  const uint64_t stride = spec.stride;
  if (stride < kRecordHeader || stride > kMaxRecordStride || stride % 8 != 0) return "stride must be a multiple of 8 in 16..4096";
  if (spec.fields.size() > kMaxRecordFields) return "up to 64 [src, len, dst] fields";
  if (spec.derefs.size() > kMaxRecordDerefs) return "up to 16 [ptrAt, src, len, dst] derefs";
  auto fits = [&](uint64_t dst, uint64_t len) { return dst >= kRecordHeader && len > 0 && len <= stride && dst <= stride - len; };
  for (size_t i = 0; i < spec.fields.size(); ++i)
    if (!fits(spec.fields[i].dst, spec.fields[i].len)) return "field " + std::to_string(i) + " does not fit the record";
  for (size_t i = 0; i < spec.derefs.size(); ++i) {
    const RecordSpec::Deref& d = spec.derefs[i];
    if (!fits(d.dst, d.len) || !fits(d.ptr_at, 8)) return "deref " + std::to_string(i) + " does not fit the record";
  }
  return "";
}

RecordWalk WalkRecords(PageWalker& mem, ListHints* hints, uint64_t head, uint64_t link_offset, uint64_t max_nodes,
                       const RecordSpec& spec) {
  RecordWalk out;
  std::vector<uint64_t> nodes;
  nodes.reserve(256);
  WalkList(mem, head, link_offset, CapNodes(max_nodes, spec.stride), hints, &nodes, &out.error);
  out.records.resize(nodes.size() * spec.stride);
  uint64_t failed = 0;
  // A node whose fields cannot be read ends the list there, as GatherList does.
  size_t n = FillRecords(mem, spec, nodes.data(), nodes.size(), out.records.data(), true, &failed);
  if (n < nodes.size()) {
    out.error = "node " + Hex(nodes[n]) + ": address " + Hex(failed) + " is not mapped";
    out.records.resize(n * spec.stride);
  }
  return out;
}

void GatherRecords(PageWalker& mem, const RecordSpec& spec, const uint64_t* addrs, size_t n, uint8_t* out) {
  if (n > 0) memset(out, 0, n * spec.stride);
  uint64_t failed;
  FillRecords(mem, spec, addrs, n, out, false, &failed);
}

namespace {

// Depth-first over an XArray; recursion is bounded by max_depth (at most 64).
struct XArrayVisitor {
  PageWalker& mem;
  uint64_t shift_offset, slots_offset, floor;
  const XArrayLimits& limits;
  const std::string& where;
  XArrayWalk& out;
  uint64_t nodes = 0;

  void Err(std::string at, std::string message) {
    out.errors.push_back(std::move(at));
    out.errors.push_back(std::move(message));
  }

  void Visit(uint64_t entry, uint64_t index, uint64_t depth) {
    constexpr int kSlots = 64;
    if (entry == 0) return;
    if ((entry & 3) == 2) {
      if (entry <= 4096) return;  // sibling/retry entries, not nodes
      uint64_t node = entry - 2;
      std::string at = where + ": xa_node " + Hex(node);
      if (depth > limits.max_depth) return Err(at, "deeper than " + std::to_string(limits.max_depth) + " levels");
      if (node < floor || (node & 7) != 0) return Err(at, "not a kernel pointer");
      if (++nodes > limits.max_nodes) {
        if (nodes == limits.max_nodes + 1) Err(where, "more than " + std::to_string(limits.max_nodes) + " nodes");
        return;
      }
      uint8_t shift;
      uint64_t slots[kSlots];
      uint64_t failed;
      if (!mem.ReadVirtual(node + shift_offset, 1, &shift, &failed) ||
          !mem.ReadVirtual(node + slots_offset, sizeof slots, reinterpret_cast<uint8_t*>(slots), &failed))
        return Err(at, "not mapped");
      if (shift % 6 != 0 || shift > 30) return Err(at, "shift " + std::to_string(shift) + " is not a multiple of 6 up to 30");
      for (int i = 0; i < kSlots; ++i)
        if (slots[i] != 0) Visit(slots[i], index + (static_cast<uint64_t>(i) << shift), depth + 1);
      return;
    }
    if (entry & 1) return;  // value entries are not pointers
    if (out.entries.size() >= limits.max_entries) return;
    out.indices.push_back(index);
    out.entries.push_back(entry);
  }
};

}  // namespace

XArrayWalk WalkXArray(PageWalker& mem, uint64_t head, uint64_t shift_offset, uint64_t slots_offset, XArrayLimits limits,
                      uint64_t floor, const std::string& where) {
  XArrayWalk out;
  if (limits.max_depth > 64) limits.max_depth = 64;
  if (limits.max_entries > kMaxListNodes) limits.max_entries = kMaxListNodes;
  XArrayVisitor{mem, shift_offset, slots_offset, floor, limits, where, out}.Visit(head, 0, 0);
  return out;
}

}  // namespace introvisor
