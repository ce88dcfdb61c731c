#include "address_space.h"

#include <cstring>

#include "core/gathers.h"
#include "js_args.h"
#include "physical_memory.h"

using introvisor::Hex;
using introvisor::IsTypedArrayOf;
using introvisor::kMaxGatherBytes;
using introvisor::kMaxReadBytes;
using introvisor::ToU64;

namespace {

Napi::Value ErrorOrNull(Napi::Env env, const std::string& error) {
  return error.empty() ? env.Null() : Napi::String::New(env, error);
}

// fields: Uint32Array [src, len, dst]*, derefs: Uint32Array [ptrAt, src, len, dst]*, stride, floor
// at info[first..first+3].
introvisor::RecordSpec ToRecordSpec(const Napi::Env& env, const Napi::CallbackInfo& info, size_t first) {
  for (size_t i = first; i < first + 2; ++i)
    if (info.Length() <= i || !IsTypedArrayOf(info[i], napi_uint32_array))
      throw Napi::TypeError::New(env, std::string(i == first ? "fields" : "derefs") + " must be a Uint32Array");
  auto f = info[first].As<Napi::Uint32Array>();
  auto d = info[first + 1].As<Napi::Uint32Array>();
  if (info.Length() <= first + 3) throw Napi::TypeError::New(env, "records: stride and floor are required");
  uint64_t stride = ToU64(env, info[first + 2], "stride");
  introvisor::RecordSpec spec;
  spec.stride = stride > UINT32_MAX ? 0 : static_cast<uint32_t>(stride);  // 0 fails CheckRecordSpec
  spec.floor = ToU64(env, info[first + 3], "floor");
  if (f.ElementLength() % 3 != 0) throw Napi::RangeError::New(env, "records: fields must be [src, len, dst] triples");
  if (d.ElementLength() % 4 != 0) throw Napi::RangeError::New(env, "records: derefs must be [ptrAt, src, len, dst] quadruples");
  for (size_t i = 0; i < f.ElementLength(); i += 3) spec.fields.push_back({f[i], f[i + 1], f[i + 2]});
  for (size_t i = 0; i < d.ElementLength(); i += 4) spec.derefs.push_back({d[i], d[i + 1], d[i + 2], d[i + 3]});
  std::string error = introvisor::CheckRecordSpec(spec);
  if (!error.empty()) throw Napi::RangeError::New(env, "records: " + error);
  return spec;
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
                         InstanceMethod<&AddressSpace::ClearCacheJs>("clearCache"),
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
  PhysicalMemory* memory = Napi::ObjectWrap<PhysicalMemory>::Unwrap(mem);
  if (memory == nullptr) throw Napi::TypeError::New(env, "AddressSpace: first argument is not a native PhysicalMemory");
  if (!IsTypedArrayOf(info[1], napi_biguint64_array)) throw Napi::TypeError::New(env, "AddressSpace: layout must be a BigUint64Array");
  auto layout = info[1].As<Napi::BigUint64Array>();
  if (layout.ElementLength() % 3 != 0) throw Napi::RangeError::New(env, "AddressSpace: layout must hold 1..64 [gpa, fileOffset, size] triples");
  std::vector<introvisor::RamRange> ranges;
  for (size_t i = 0; i < layout.ElementLength(); i += 3) ranges.push_back({layout[i], layout[i + 1], layout[i + 2]});
  std::string error = introvisor::CheckRamLayout(ranges);
  if (!error.empty()) throw Napi::RangeError::New(env, "AddressSpace: " + error);
  uint64_t root = ToU64(env, info[2], "root");
  uint64_t levels = ToU64(env, info[3], "levels");
  if (levels != 4 && levels != 5) throw Napi::RangeError::New(env, "AddressSpace: levels must be 4 or 5");
  memory_ref_ = Napi::Persistent(mem);
  walker_ = std::make_unique<introvisor::PageWalker>(memory->File(), std::move(ranges), root, static_cast<int>(levels));
}

// translate(va) -> bigint physical address, or null when not mapped.
Napi::Value AddressSpace::TranslateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t va = ToU64(env, info[0], "va");
  uint64_t pa;
  if (!walker_->Translate(va, &pa)) return env.Null();
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
  if (!walker_->ReadVirtual(va, len, buf.Data(), &failed))
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
  if (!walker_->ReadVirtual(va, len, buf.Data(), &failed)) return env.Null();
  return buf;
}

// readPhys(pa, len) -> Buffer through the RAM layout (PCI hole aware).
Napi::Value AddressSpace::ReadPhysJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t pa = ToU64(env, info[0], "pa");
  uint64_t len = ToU64(env, info[1], "length");
  if (len > kMaxReadBytes) throw Napi::RangeError::New(env, "physical read of " + std::to_string(len) + " bytes exceeds the limit");
  const uint8_t* p = walker_->Phys(pa, len);
  if (p == nullptr) throw Napi::RangeError::New(env, "guest-physical range " + Hex(pa) + "+" + Hex(len) + " is not backed by guest RAM");
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

// readGather(addresses: BigUint64Array, offset, length) -> { data: Buffer(n*length), ok: Uint8Array(n) }
Napi::Value AddressSpace::ReadGatherJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "readGather(addresses: BigUint64Array, offset, length)");
  if (!IsTypedArrayOf(info[0], napi_biguint64_array)) throw Napi::TypeError::New(env, "readGather: addresses must be a BigUint64Array");
  auto addrs = info[0].As<Napi::BigUint64Array>();
  uint64_t offset = ToU64(env, info[1], "offset");
  uint64_t len = ToU64(env, info[2], "length");
  size_t n = addrs.ElementLength();
  if (len == 0 || len > kMaxReadBytes || n * len > kMaxGatherBytes) throw Napi::RangeError::New(env, "readGather: " + std::to_string(n) + " records of " + std::to_string(len) + " bytes exceed the limit");
  auto data = Napi::Buffer<uint8_t>::New(env, n * len);
  auto ok = Napi::Uint8Array::New(env, n);
  introvisor::ReadGather(*walker_, addrs.Data(), n, offset, len, data.Data(), ok.Data());
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", data);
  result.Set("ok", ok);
  return result;
}

// walkList(head, linkOffset, maxNodes, gatherOffset, gatherLength)
//   -> { nodes: BigUint64Array (container addresses), data: Buffer (gatherLength per node), error: string|null }
Napi::Value AddressSpace::WalkListJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5) throw Napi::TypeError::New(env, "walkList(head, linkOffset, maxNodes, gatherOffset, gatherLength)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t link_offset = ToU64(env, info[1], "linkOffset");
  uint64_t max_nodes = ToU64(env, info[2], "maxNodes");
  uint64_t gather_offset = ToU64(env, info[3], "gatherOffset");
  uint64_t gather_len = ToU64(env, info[4], "gatherLength");
  if (gather_len > introvisor::kMaxListGatherLength) throw Napi::RangeError::New(env, "walkList: gatherLength above 64 KiB");
  introvisor::ListGather w = introvisor::GatherList(*walker_, &hints_, head, link_offset, max_nodes, gather_offset, gather_len);
  auto nodes = Napi::BigUint64Array::New(env, w.nodes.size());
  if (!w.nodes.empty()) memcpy(nodes.Data(), w.nodes.data(), w.nodes.size() * sizeof(uint64_t));
  Napi::Object result = Napi::Object::New(env);
  result.Set("nodes", nodes);
  result.Set("data", Napi::Buffer<uint8_t>::Copy(env, w.data.data(), w.data.size()));
  result.Set("error", ErrorOrNull(env, w.error));
  return result;
}

// clearCache(): forget cached translations (the guest changes its page tables).
Napi::Value AddressSpace::ClearCacheJs(const Napi::CallbackInfo& info) {
  walker_->ClearCache();
  return info.Env().Undefined();
}

// setLinear(regions: BigUint64Array [va, pa, size]*): replaces the linear shortcuts (empty array: none).
Napi::Value AddressSpace::SetLinearJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsTypedArrayOf(info[0], napi_biguint64_array)) throw Napi::TypeError::New(env, "setLinear(regions: BigUint64Array)");
  auto arr = info[0].As<Napi::BigUint64Array>();
  if (arr.ElementLength() % 3 != 0) throw Napi::RangeError::New(env, "setLinear: up to 8 [va, pa, size] triples");
  std::vector<introvisor::LinearRegion> regions;
  for (size_t i = 0; i < arr.ElementLength(); i += 3) regions.push_back({arr[i], arr[i + 1], arr[i + 2]});
  std::string error = introvisor::CheckLinearRegions(regions);
  if (!error.empty()) throw Napi::RangeError::New(env, "setLinear: " + error);
  walker_->SetLinear(std::move(regions));
  return env.Undefined();
}

// walkRecords(head, linkOffset, maxNodes, fields, derefs, stride, floor) -> { records: ArrayBuffer, error: string|null }
Napi::Value AddressSpace::WalkRecordsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 7) throw Napi::TypeError::New(env, "walkRecords(head, linkOffset, maxNodes, fields, derefs, stride, floor)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t link_offset = ToU64(env, info[1], "linkOffset");
  uint64_t max_nodes = ToU64(env, info[2], "maxNodes");
  introvisor::RecordSpec spec = ToRecordSpec(env, info, 3);
  introvisor::RecordWalk w = introvisor::WalkRecords(*walker_, &hints_, head, link_offset, max_nodes, spec);
  auto records = Napi::ArrayBuffer::New(env, w.records.size());
  if (!w.records.empty()) memcpy(records.Data(), w.records.data(), w.records.size());
  Napi::Object result = Napi::Object::New(env);
  result.Set("records", records);
  result.Set("error", ErrorOrNull(env, w.error));
  return result;
}

// gatherRecords(addresses: BigUint64Array, fields, derefs, stride, floor) -> ArrayBuffer
Napi::Value AddressSpace::GatherRecordsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !IsTypedArrayOf(info[0], napi_biguint64_array))
    throw Napi::TypeError::New(env, "gatherRecords(addresses: BigUint64Array, fields, derefs, stride, floor)");
  auto addrs = info[0].As<Napi::BigUint64Array>();
  introvisor::RecordSpec spec = ToRecordSpec(env, info, 1);
  size_t n = addrs.ElementLength();
  if (n * spec.stride > kMaxGatherBytes) throw Napi::RangeError::New(env, "gatherRecords: " + std::to_string(n) + " records exceed the limit");
  auto records = Napi::ArrayBuffer::New(env, n * spec.stride);
  introvisor::GatherRecords(*walker_, spec, addrs.Data(), n, static_cast<uint8_t*>(records.Data()));
  return records;
}

// walkXArray(head, shiftOffset, slotsOffset, maxDepth, maxNodes, maxEntries, floor, where)
//   -> { indices: Float64Array, entries: BigUint64Array, errors: string[] ([where, message]*) }
Napi::Value AddressSpace::WalkXArrayJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 8 || !info[7].IsString()) throw Napi::TypeError::New(env, "walkXArray(head, shiftOffset, slotsOffset, maxDepth, maxNodes, maxEntries, floor, where)");
  uint64_t head = ToU64(env, info[0], "head");
  uint64_t shift_off = ToU64(env, info[1], "shiftOffset");
  uint64_t slots_off = ToU64(env, info[2], "slotsOffset");
  introvisor::XArrayLimits limits{ToU64(env, info[3], "maxDepth"), ToU64(env, info[4], "maxNodes"), ToU64(env, info[5], "maxEntries")};
  uint64_t floor = ToU64(env, info[6], "floor");
  std::string where = info[7].As<Napi::String>().Utf8Value();
  introvisor::XArrayWalk w = introvisor::WalkXArray(*walker_, head, shift_off, slots_off, limits, floor, where);
  auto indices = Napi::Float64Array::New(env, w.indices.size());
  for (size_t i = 0; i < w.indices.size(); ++i) indices[i] = static_cast<double>(w.indices[i]);
  auto entries = Napi::BigUint64Array::New(env, w.entries.size());
  if (!w.entries.empty()) memcpy(entries.Data(), w.entries.data(), w.entries.size() * sizeof(uint64_t));
  auto errors = Napi::Array::New(env, w.errors.size());
  for (size_t i = 0; i < w.errors.size(); ++i) errors.Set(static_cast<uint32_t>(i), Napi::String::New(env, w.errors[i]));
  Napi::Object result = Napi::Object::New(env);
  result.Set("indices", indices);
  result.Set("entries", entries);
  result.Set("errors", errors);
  return result;
}
