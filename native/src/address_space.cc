#include "address_space.h"
#include "js_args.h"

#include <cstring>
#include <functional>
#include <unordered_set>

namespace {

using introvisor::Hex;
using introvisor::ToU64;

constexpr uint64_t kMaxReadBytes = 64ull << 20;
constexpr uint64_t kMaxListNodes = 1u << 20;
constexpr uint64_t kMaxGatherBytes = 64ull << 20;
constexpr size_t kTlbMaxEntries = 1u << 16;
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

Napi::Function AddressSpace::Init(Napi::Env env) {
  return DefineClass(env, "AddressSpace",
                     {
                         InstanceMethod<&AddressSpace::TranslateJs>("translate"),
                         InstanceMethod<&AddressSpace::ReadJs>("read"),
                         InstanceMethod<&AddressSpace::TryReadJs>("tryRead"),
                         InstanceMethod<&AddressSpace::ReadPhysJs>("readPhys"),
                         InstanceMethod<&AddressSpace::ReadGatherJs>("readGather"),
                         InstanceMethod<&AddressSpace::WalkListJs>("walkList"),
                         InstanceMethod<&AddressSpace::SetRootJs>("setRoot"),
                         InstanceMethod<&AddressSpace::ClearCacheJs>("clearCache"),
                         InstanceMethod<&AddressSpace::StatsJs>("stats"),
                         InstanceMethod<&AddressSpace::SetLinearJs>("setLinear"),
                         InstanceMethod<&AddressSpace::WalkRecordsJs>("walkRecords"),
                         InstanceMethod<&AddressSpace::GatherRecordsJs>("gatherRecords"),
                         InstanceMethod<&AddressSpace::WalkXArrayJs>("walkXArray"),
                     });
}

// new AddressSpace(physicalMemory, layout: BigUint64Array [gpa, fileOffset, size]*, root: bigint, levels: 4|5)
AddressSpace::AddressSpace(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddressSpace>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsObject() || !info[1].IsTypedArray())
    throw Napi::TypeError::New(env, "AddressSpace(physicalMemory, layout: BigUint64Array, root, levels)");
  Napi::Object mem = info[0].As<Napi::Object>();
  memory_ = Napi::ObjectWrap<PhysicalMemory>::Unwrap(mem);
  if (memory_ == nullptr) throw Napi::TypeError::New(env, "AddressSpace: first argument is not a native PhysicalMemory");
  memory_ref_ = Napi::Persistent(mem);
  auto arr = info[1].As<Napi::TypedArray>();
  if (arr.TypedArrayType() != napi_biguint64_array) throw Napi::TypeError::New(env, "AddressSpace: layout must be a BigUint64Array");
  auto layout = arr.As<Napi::TypedArrayOf<uint64_t>>();
  if (layout.ElementLength() % 3 != 0 || layout.ElementLength() == 0 || layout.ElementLength() > 3 * 64)
    throw Napi::RangeError::New(env, "AddressSpace: layout must hold 1..64 [gpa, fileOffset, size] triples");
  for (size_t i = 0; i < layout.ElementLength(); i += 3) {
    Range r{layout[i], layout[i + 1], layout[i + 2]};
    if (r.size == 0 || r.gpa + r.size < r.gpa || r.file_offset + r.size < r.file_offset)
      throw Napi::RangeError::New(env, "AddressSpace: layout range " + std::to_string(i / 3) + " is empty or wraps");
    ranges_.push_back(r);
  }
  root_ = ToU64(env, info[2], "root") & kFrameMask;
  uint64_t levels = ToU64(env, info[3], "levels");
  if (levels != 4 && levels != 5) throw Napi::RangeError::New(env, "AddressSpace: levels must be 4 or 5");
  levels_ = static_cast<int>(levels);
}

const uint8_t* AddressSpace::Phys(uint64_t pa, uint64_t len) const {
  for (const Range& r : ranges_) {
    if (pa >= r.gpa && pa - r.gpa < r.size) {
      uint64_t off = pa - r.gpa;
      if (len > r.size - off) return nullptr;
      return memory_->At(r.file_offset + off, len);
    }
  }
  return nullptr;
}

bool AddressSpace::Walk(uint64_t va, uint64_t* pa) {
  // Canonical form: bits above the top translated bit copy it.
  int top = levels_ == 5 ? 56 : 47;
  uint64_t upper = va >> top;
  uint64_t ones = (~0ull) >> top;
  if (upper != 0 && upper != ones) return false;
  ++walks_;
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

bool AddressSpace::Translate(uint64_t va, uint64_t* pa) {
  for (const Linear& l : linear_) {
    if (va >= l.va && va - l.va < l.size) {
      *pa = l.pa + (va - l.va);
      return true;
    }
  }
  uint64_t page = va & ~0xfffull;
  auto it = tlb_.find(page);
  if (it != tlb_.end()) {
    ++hits_;
    *pa = it->second | (va & 0xfff);
    return true;
  }
  uint64_t frame;
  if (!Walk(page, &frame)) return false;
  if (tlb_.size() >= kTlbMaxEntries) tlb_.clear();
  tlb_.emplace(page, frame);
  *pa = frame | (va & 0xfff);
  return true;
}

bool AddressSpace::ReadVirtual(uint64_t va, uint64_t len, uint8_t* out, uint64_t* failed_va) {
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

bool AddressSpace::ReadU64(uint64_t va, uint64_t* out) {
  uint8_t buf[8];
  uint64_t failed;
  if (!ReadVirtual(va, 8, buf, &failed)) return false;
  *out = LoadU64(buf);
  return true;
}

// translate(va) -> bigint physical address, or null when not mapped.
Napi::Value AddressSpace::TranslateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t va = ToU64(env, info[0], "va");
  uint64_t pa;
  if (!Translate(va, &pa)) return env.Null();
  return Napi::BigInt::New(env, pa);
}

// read(va, len) -> Buffer; RangeError naming the first unmapped address.
Napi::Value AddressSpace::ReadJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) throw Napi::TypeError::New(env, "read(va, length)");
  uint64_t va = ToU64(env, info[0], "va");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "virtual read of " + std::to_string(len) + " bytes exceeds the " + std::to_string(kMaxReadBytes) + "-byte limit");
  auto buf = Napi::Buffer<uint8_t>::New(env, len);
  uint64_t failed;
  if (!ReadVirtual(va, len, buf.Data(), &failed))
    throw Napi::RangeError::New(env, "virtual address " + Hex(failed) + " (reading " + Hex(va) + "+" + Hex(len) + ") is not mapped");
  return buf;
}

// tryRead(va, len) -> Buffer or null: for probes where "not mapped" is an answer, not an error.
Napi::Value AddressSpace::TryReadJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t va = ToU64(env, info[0], "va");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "virtual read of " + std::to_string(len) + " bytes exceeds the limit");
  auto buf = Napi::Buffer<uint8_t>::New(env, len);
  uint64_t failed;
  if (!ReadVirtual(va, len, buf.Data(), &failed)) return env.Null();
  return buf;
}

// readPhys(pa, len) -> Buffer through the RAM layout (PCI hole aware).
Napi::Value AddressSpace::ReadPhysJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t pa = ToU64(env, info[0], "pa");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "physical read of " + std::to_string(len) + " bytes exceeds the limit");
  const uint8_t* p = Phys(pa, len);
  if (p == nullptr) throw Napi::RangeError::New(env, "guest-physical range " + Hex(pa) + "+" + Hex(len) + " is not backed by guest RAM");
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

// readGather(addresses: BigUint64Array, offset, length[, minAddress]) -> { data: Buffer(n*length), ok: Uint8Array(n) }.
// One record per address at address+offset; unmapped records are zero-filled with ok=0.
Napi::Value AddressSpace::ReadGatherJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "readGather(addresses: BigUint64Array, offset, length)");
  auto arr = info[0].As<Napi::TypedArray>();
  if (arr.TypedArrayType() != napi_biguint64_array) throw Napi::TypeError::New(env, "readGather: addresses must be a BigUint64Array");
  auto addrs = arr.As<Napi::TypedArrayOf<uint64_t>>();
  uint64_t offset = ToU64(env, info[1], "offset");
  uint64_t len = ToU64(env, info[2], "length");
  size_t n = addrs.ElementLength();
  if (len == 0 || len > kMaxReadBytes || n * len > kMaxGatherBytes) throw Napi::RangeError::New(env, "readGather: " + std::to_string(n) + " records of " + std::to_string(len) + " bytes exceed the limit");
  // Optional floor: addresses below it (user half, NULL) are refused unread.
  uint64_t floor = info.Length() > 3 && !info[3].IsUndefined() ? ToU64(env, info[3], "minAddress") : 0;
  auto data = Napi::Buffer<uint8_t>::New(env, n * len);
  auto ok = Napi::Uint8Array::New(env, n);
  memset(data.Data(), 0, n * len);
  for (size_t i = 0; i < n; ++i) {
    uint64_t failed;
    bool good = addrs[i] >= floor && ReadVirtual(addrs[i] + offset, len, data.Data() + i * len, &failed);
    if (!good) memset(data.Data() + i * len, 0, len);
    ok[i] = good ? 1 : 0;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", data);
  result.Set("ok", ok);
  return result;
}

// walkList(head, linkOffset, maxNodes, gatherOffset, gatherLength[, fields: Uint32Array [offset, length]*])
//   -> { nodes: BigUint64Array (container addresses), data: Buffer (gatherLength per node), error: string|null }
// Follows list_head.next from the list_head at `head` until it returns to head. A
// container is the list_head address minus linkOffset. Stops with an error (keeping
// what it read) on an unmapped link, a cycle that does not pass through head, or
// more than maxNodes nodes: the guest can forge any of these.
Napi::Value AddressSpace::WalkListJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5) throw Napi::TypeError::New(env, "walkList(head, linkOffset, maxNodes, gatherOffset, gatherLength)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t link_offset = ToU64(env, info[1], "linkOffset");
  uint64_t max_nodes = ToU64(env, info[2], "maxNodes");
  uint64_t gather_offset = ToU64(env, info[3], "gatherOffset");
  uint64_t gather_len = ToU64(env, info[4], "gatherLength");
  // Optional field list: gather only these [offset, length] pieces, packed, instead of one span.
  std::vector<std::pair<uint32_t, uint32_t>> fields;
  if (info.Length() > 5 && !info[5].IsUndefined()) {
    if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      throw Napi::TypeError::New(env, "walkList: fields must be a Uint32Array of [offset, length] pairs");
    auto f = info[5].As<Napi::Uint32Array>();
    if (f.ElementLength() % 2 != 0 || f.ElementLength() > 128) throw Napi::RangeError::New(env, "walkList: up to 64 [offset, length] pairs");
    gather_len = 0;
    for (size_t i = 0; i < f.ElementLength(); i += 2) {
      fields.emplace_back(f[i], f[i + 1]);
      gather_len += f[i + 1];
    }
  }
  if (max_nodes > kMaxListNodes) max_nodes = kMaxListNodes;
  if (gather_len > 1u << 16) throw Napi::RangeError::New(env, "walkList: gatherLength above 64 KiB");
  if (gather_len * max_nodes > kMaxGatherBytes) max_nodes = kMaxGatherBytes / (gather_len == 0 ? 1 : gather_len);

  std::vector<uint64_t> nodes;
  std::vector<uint8_t> data;
  nodes.reserve(256);
  data.reserve(256 * gather_len);
  std::string error;
  uint64_t cur = head;
  // Brent's cycle detection: no per-node memory, finds a loop that skips the head
  // within a small multiple of its length (and max_nodes bounds the walk anyway).
  uint64_t tortoise = head;
  uint64_t power = 1, lambda = 0;
  for (;;) {
    uint64_t next;
    if (!ReadU64(cur, &next)) {
      error = "list link at " + Hex(cur) + " is not mapped";
      break;
    }
    if (next == head) break;
    if (next == tortoise) {
      error = "cycle at " + Hex(next) + " that does not return to the head " + Hex(head);
      // Brent's check notices the loop only after going round it: keep each node once.
      std::unordered_set<uint64_t> seen;
      size_t keep = 0;
      while (keep < nodes.size() && seen.insert(nodes[keep]).second) ++keep;
      nodes.resize(keep);
      data.resize(keep * gather_len);
      break;
    }
    if (++lambda == power) {
      tortoise = next;
      power <<= 1;
      lambda = 0;
    }
    if (nodes.size() >= max_nodes) {
      error = "more than " + std::to_string(max_nodes) + " nodes";
      break;
    }
    uint64_t container = next - link_offset;
    if (gather_len > 0) {
      size_t at = data.size();
      data.resize(at + gather_len);
      uint64_t failed;
      bool good = true;
      if (fields.empty()) {
        good = ReadVirtual(container + gather_offset, gather_len, data.data() + at, &failed);
      } else {
        // Fields of one node sit on different cache lines: find and prefetch them all
        // before copying, so the memory loads overlap instead of queueing.
        const uint8_t* src[64];
        size_t nf = fields.size();
        for (size_t i = 0; i < nf; ++i) {
          uint64_t va = container + fields[i].first, pa;
          src[i] = ((va & 0xfff) + fields[i].second <= 0x1000 && Translate(va, &pa)) ? Phys(pa, fields[i].second) : nullptr;
          if (src[i] != nullptr) __builtin_prefetch(src[i]);
        }
        size_t pos = at;
        for (size_t i = 0; i < nf && good; ++i) {
          if (src[i] != nullptr) memcpy(data.data() + pos, src[i], fields[i].second);
          else good = ReadVirtual(container + fields[i].first, fields[i].second, data.data() + pos, &failed);
          pos += fields[i].second;
        }
      }
      if (!good) {
        data.resize(at);
        error = "node " + Hex(container) + ": address " + Hex(failed) + " is not mapped";
        break;
      }
    }
    nodes.push_back(container);
    cur = next;
  }
  auto out_nodes = Napi::BigUint64Array::New(env, nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) out_nodes[i] = nodes[i];
  Napi::Object result = Napi::Object::New(env);
  result.Set("nodes", out_nodes);
  result.Set("data", Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size()));
  result.Set("error", error.empty() ? env.Null() : Napi::String::New(env, error));
  return result;
}

// setRoot(root, levels): a new page-table root (e.g. another process's mm->pgd); clears the cache.
Napi::Value AddressSpace::SetRootJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t root = ToU64(env, info[0], "root");
  uint64_t levels = ToU64(env, info[1], "levels");
  if (levels != 4 && levels != 5) throw Napi::RangeError::New(env, "setRoot: levels must be 4 or 5");
  root_ = root & kFrameMask;
  levels_ = static_cast<int>(levels);
  tlb_.clear();
  walk_hints_.clear();
  return env.Undefined();
}

Napi::Value AddressSpace::ClearCacheJs(const Napi::CallbackInfo& info) {
  tlb_.clear();
  return info.Env().Undefined();
}

Napi::Value AddressSpace::StatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("walks", Napi::Number::New(env, static_cast<double>(walks_)));
  o.Set("hits", Napi::Number::New(env, static_cast<double>(hits_)));
  o.Set("cached", Napi::Number::New(env, static_cast<double>(tlb_.size())));
  return o;
}

// setLinear(regions: BigUint64Array [va, pa, size]*): replaces the linear shortcuts (empty array: none).
Napi::Value AddressSpace::SetLinearJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "setLinear(regions: BigUint64Array)");
  auto arr = info[0].As<Napi::TypedArrayOf<uint64_t>>();
  if (arr.ElementLength() % 3 != 0 || arr.ElementLength() > 3 * 8) throw Napi::RangeError::New(env, "setLinear: up to 8 [va, pa, size] triples");
  std::vector<Linear> next;
  for (size_t i = 0; i < arr.ElementLength(); i += 3) {
    Linear l{arr[i], arr[i + 1], arr[i + 2]};
    if (l.va + l.size < l.va || l.pa + l.size < l.pa) throw Napi::RangeError::New(env, "setLinear: region wraps");
    next.push_back(l);
  }
  linear_ = std::move(next);
  return env.Undefined();
}

// ---- Fixed-stride records --------------------------------------------------------------
// The views read a handful of fields from thousands of structures (task_structs, struct
// pids). walkRecords/gatherRecords return them as one ArrayBuffer of fixed-stride records
// that JavaScript reads through typed-array views, instead of a Buffer per read. Record
// layout: bytes [0, 8) the structure's address, [8, 12) a status word: bit 0 = every field
// was readable, bit 1+k = deref k was followed; the caller's fields land at dst >= 16.
// A deref reads `len` bytes at (the u64 at record offset ptr_at) + src, only when that
// pointer is at or above `floor` (the kernel half): one level of pointer following
// (task->cred->uid, task->mm->pgd), with the same checks as readGather.

namespace {
constexpr uint32_t kRecordHeader = 16;
constexpr uint32_t kMaxRecordStride = 4096;
constexpr size_t kRecordBlock = 32;  // records whose loads are prefetched together
}  // namespace

const uint8_t* AddressSpace::HostPointer(uint64_t va, uint64_t len) {
  if ((va & 0xfff) + len > 0x1000) return nullptr;
  uint64_t pa;
  return Translate(va, &pa) ? Phys(pa, len) : nullptr;
}

// fields: Uint32Array [src, len, dst]*, derefs: Uint32Array [ptrAt, src, len, dst]*, stride, floor.
AddressSpace::RecordSpec AddressSpace::ParseRecordSpec(const Napi::Env& env, const Napi::CallbackInfo& info, size_t first) {
  RecordSpec spec;
  auto u32s = [&](size_t i, const char* what) -> Napi::Uint32Array {
    if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      throw Napi::TypeError::New(env, std::string(what) + " must be a Uint32Array");
    return info[i].As<Napi::Uint32Array>();
  };
  Napi::Uint32Array f = u32s(first, "fields");
  Napi::Uint32Array d = u32s(first + 1, "derefs");
  if (info.Length() <= first + 3) throw Napi::TypeError::New(env, "records: stride and floor are required");
  uint64_t stride = ToU64(env, info[first + 2], "stride");
  spec.floor = ToU64(env, info[first + 3], "floor");
  if (stride < kRecordHeader || stride > kMaxRecordStride || stride % 8 != 0)
    throw Napi::RangeError::New(env, "records: stride must be a multiple of 8 in 16..4096");
  spec.stride = static_cast<uint32_t>(stride);
  if (f.ElementLength() % 3 != 0 || f.ElementLength() > 3 * 64) throw Napi::RangeError::New(env, "records: up to 64 [src, len, dst] fields");
  if (d.ElementLength() % 4 != 0 || d.ElementLength() > 4 * 16) throw Napi::RangeError::New(env, "records: up to 16 [ptrAt, src, len, dst] derefs");
  auto fits = [&](uint64_t dst, uint64_t len) { return dst >= kRecordHeader && len > 0 && len <= stride && dst <= stride - len; };
  for (size_t i = 0; i < f.ElementLength(); i += 3) {
    RecordSpec::Field x{f[i], f[i + 1], f[i + 2]};
    if (!fits(x.dst, x.len)) throw Napi::RangeError::New(env, "records: field " + std::to_string(i / 3) + " does not fit the record");
    spec.fields.push_back(x);
  }
  for (size_t i = 0; i < d.ElementLength(); i += 4) {
    RecordSpec::Deref x{d[i], d[i + 1], d[i + 2], d[i + 3]};
    if (!fits(x.dst, x.len) || !fits(x.ptr_at, 8)) throw Napi::RangeError::New(env, "records: deref " + std::to_string(i / 4) + " does not fit the record");
    spec.derefs.push_back(x);
  }
  return spec;
}

namespace {
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
}  // namespace

size_t AddressSpace::FillRecords(const RecordSpec& spec, const uint64_t* nodes, size_t n, uint8_t* out, bool stop_at_failure, uint64_t* failed_va) {
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
    const uint8_t* h = HostPointer(page, 0x1000);
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
      uint8_t* rec = out + i * spec.stride;  // zero-filled by the caller
      memcpy(rec, &nodes[i], 8);
      bool good = true;
      for (size_t k = 0; k < nf && good; ++k) {
        const RecordSpec::Field& f = spec.fields[k];
        const uint8_t* p = src[(i - b) * nf + k];
        if (p != nullptr) CopySmall(rec + f.dst, p, f.len);
        else good = ReadVirtual(nodes[i] + f.src, f.len, rec + f.dst, failed_va);  // crosses a page, or unmapped
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
          if (ptr >= spec.floor) p = HostPointer(ptr + d.src, d.len);
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
          good = ptr >= spec.floor && ReadVirtual(ptr + d.src, d.len, rec + d.dst, &ignored);
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

void AddressSpace::WalkNodes(uint64_t head, uint64_t link_offset, uint64_t max_nodes, std::vector<uint64_t>* nodes, std::string* error) {
  // As walkList: Brent's cycle detection, stop at an unmapped link or more than max_nodes.
  // A list changes little between scans: the host addresses of the previous walk's links
  // from this head are prefetched a few nodes ahead, so the pointer chase mostly hits the
  // cache. They are hints only (a prefetch never faults); every link is still read and checked.
  constexpr size_t kAhead = 16;
  std::vector<const uint8_t*> hints;
  if (walk_hint_head_ == head && walk_hint_link_ == link_offset) hints.swap(walk_hints_);
  walk_hints_.clear();
  uint64_t cur = head, tortoise = head, power = 1, lambda = 0;
  for (size_t i = 0;; ++i) {
    if (i + kAhead < hints.size()) __builtin_prefetch(hints[i + kAhead]);
    uint64_t next;
    const uint8_t* link = HostPointer(cur, 8);
    if (link != nullptr) {
      next = LoadU64(link);
    } else if (!ReadU64(cur, &next)) {
      *error = "list link at " + Hex(cur) + " is not mapped";
      break;
    }
    if (walk_hints_.size() < kMaxListNodes) walk_hints_.push_back(link);
    if (next == head) break;
    if (next == tortoise) {
      *error = "cycle at " + Hex(next) + " that does not return to the head " + Hex(head);
      std::unordered_set<uint64_t> seen;
      size_t keep = 0;
      while (keep < nodes->size() && seen.insert((*nodes)[keep]).second) ++keep;
      nodes->resize(keep);
      break;
    }
    if (++lambda == power) {
      tortoise = next;
      power <<= 1;
      lambda = 0;
    }
    if (nodes->size() >= max_nodes) {
      *error = "more than " + std::to_string(max_nodes) + " nodes";
      break;
    }
    nodes->push_back(next - link_offset);
    cur = next;
  }
  walk_hint_head_ = head;
  walk_hint_link_ = link_offset;
}

// walkRecords(head, linkOffset, maxNodes, fields, derefs, stride, floor) -> { records: ArrayBuffer, error: string|null }
// walkList's walk (bounded, cycle-checked; the guest can forge every link) with one record
// per node. A node whose fields cannot be read ends the walk there, as walkList's gather does.
Napi::Value AddressSpace::WalkRecordsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 7) throw Napi::TypeError::New(env, "walkRecords(head, linkOffset, maxNodes, fields, derefs, stride, floor)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t link_offset = ToU64(env, info[1], "linkOffset");
  uint64_t max_nodes = ToU64(env, info[2], "maxNodes");
  RecordSpec spec = ParseRecordSpec(env, info, 3);
  if (max_nodes > kMaxListNodes) max_nodes = kMaxListNodes;
  if (spec.stride * max_nodes > kMaxGatherBytes) max_nodes = kMaxGatherBytes / spec.stride;
  std::vector<uint64_t> nodes;
  nodes.reserve(256);
  std::string error;
  WalkNodes(head, link_offset, max_nodes, &nodes, &error);
  std::vector<uint8_t> out(nodes.size() * spec.stride);
  uint64_t failed = 0;
  size_t n = FillRecords(spec, nodes.data(), nodes.size(), out.data(), true, &failed);
  if (n < nodes.size()) error = "node " + Hex(nodes[n]) + ": address " + Hex(failed) + " is not mapped";
  auto records = Napi::ArrayBuffer::New(env, n * spec.stride);
  if (n > 0) memcpy(records.Data(), out.data(), n * spec.stride);
  Napi::Object result = Napi::Object::New(env);
  result.Set("records", records);
  result.Set("error", error.empty() ? env.Null() : Napi::String::New(env, error));
  return result;
}

// gatherRecords(addresses: BigUint64Array, fields, derefs, stride, floor) -> ArrayBuffer
// One record per address, in order; an unreadable structure gets status 0 (and zeroed fields).
Napi::Value AddressSpace::GatherRecordsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "gatherRecords(addresses: BigUint64Array, fields, derefs, stride, floor)");
  auto addrs = info[0].As<Napi::TypedArrayOf<uint64_t>>();
  RecordSpec spec = ParseRecordSpec(env, info, 1);
  size_t n = addrs.ElementLength();
  if (n * spec.stride > kMaxGatherBytes) throw Napi::RangeError::New(env, "gatherRecords: " + std::to_string(n) + " records exceed the limit");
  std::vector<uint64_t> nodes(addrs.Data(), addrs.Data() + n);
  auto records = Napi::ArrayBuffer::New(env, n * spec.stride);
  if (n > 0) memset(records.Data(), 0, n * spec.stride);
  uint64_t failed;
  FillRecords(spec, nodes.data(), n, static_cast<uint8_t*>(records.Data()), false, &failed);
  return records;
}

// walkXArray(head, nodeShiftOffset, nodeSlotsOffset, maxDepth, maxNodes, maxEntries, floor, where)
//   -> { indices: Float64Array, entries: BigUint64Array, errors: string[] ([where, message]*) }
// The pointer entries of an XArray (e.g. an IDR) and their indices, depth first in index
// order. Internal entries (low bits 10) above 4096 are nodes: each must be a kernel pointer,
// readable, with a shift that is a multiple of 6 up to 30; depth, node count and entry count
// are bounded. Value entries (low bit 1) and sibling/retry entries are skipped.
Napi::Value AddressSpace::WalkXArrayJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 8 || !info[7].IsString()) throw Napi::TypeError::New(env, "walkXArray(head, shiftOffset, slotsOffset, maxDepth, maxNodes, maxEntries, floor, where)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t shift_off = ToU64(env, info[1], "shiftOffset");
  uint64_t slots_off = ToU64(env, info[2], "slotsOffset");
  uint64_t max_depth = ToU64(env, info[3], "maxDepth");
  uint64_t max_nodes = ToU64(env, info[4], "maxNodes");
  uint64_t max_entries = ToU64(env, info[5], "maxEntries");
  uint64_t floor = ToU64(env, info[6], "floor");
  std::string where = info[7].As<Napi::String>().Utf8Value();
  if (max_depth > 64) max_depth = 64;
  if (max_entries > kMaxListNodes) max_entries = kMaxListNodes;
  std::vector<double> indices;
  std::vector<uint64_t> entries;
  std::vector<std::string> errors;
  uint64_t nodes = 0;
  constexpr int kSlots = 64;
  auto err = [&](std::string w, std::string m) { errors.push_back(std::move(w)); errors.push_back(std::move(m)); };
  std::function<void(uint64_t, uint64_t, uint64_t)> visit = [&](uint64_t entry, uint64_t index, uint64_t depth) {
    if (entry == 0) return;
    if ((entry & 3) == 2) {
      if (entry <= 4096) return;  // sibling/retry entries, not nodes
      uint64_t node = entry - 2;
      std::string at = where + ": xa_node " + Hex(node);
      if (depth > max_depth) return err(at, "deeper than " + std::to_string(max_depth) + " levels");
      if (node < floor || (node & 7) != 0) return err(at, "not a kernel pointer");
      if (++nodes > max_nodes) {
        if (nodes == max_nodes + 1) err(where, "more than " + std::to_string(max_nodes) + " nodes");
        return;
      }
      uint8_t shift;
      uint64_t slots[kSlots];
      uint64_t failed;
      if (!ReadVirtual(node + shift_off, 1, &shift, &failed) ||
          !ReadVirtual(node + slots_off, sizeof slots, reinterpret_cast<uint8_t*>(slots), &failed))
        return err(at, "not mapped");
      if (shift % 6 != 0 || shift > 30) return err(at, "shift " + std::to_string(shift) + " is not a multiple of 6 up to 30");
      for (int i = 0; i < kSlots; ++i)
        if (slots[i] != 0) visit(slots[i], index + (static_cast<uint64_t>(i) << shift), depth + 1);
      return;
    }
    if (entry & 1) return;  // value entries are not pointers
    if (entries.size() >= max_entries) return;
    indices.push_back(static_cast<double>(index));
    entries.push_back(entry);
  };
  visit(head, 0, 0);
  auto out_idx = Napi::Float64Array::New(env, indices.size());
  auto out_ent = Napi::BigUint64Array::New(env, entries.size());
  if (!indices.empty()) memcpy(out_idx.Data(), indices.data(), indices.size() * sizeof(double));
  if (!entries.empty()) memcpy(out_ent.Data(), entries.data(), entries.size() * sizeof(uint64_t));
  auto out_err = Napi::Array::New(env, errors.size());
  for (size_t i = 0; i < errors.size(); ++i) out_err.Set(static_cast<uint32_t>(i), Napi::String::New(env, errors[i]));
  Napi::Object result = Napi::Object::New(env);
  result.Set("indices", out_idx);
  result.Set("entries", out_ent);
  result.Set("errors", out_err);
  return result;
}
