// Unit test of the native core (native/src/core/) without Node: hand-built page
// tables in a real file, 4- and 5-level paging with large pages, hostile entries,
// the one list walk (bound, cycle, unmapped link), list and record gathers and
// XArrays. Run by native/test/run.sh (built with sanitizers).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/core/gathers.h"
#include "../src/core/list_walk.h"
#include "../src/core/page_walker.h"
#include "../src/core/ram_file.h"

using namespace introvisor;

namespace {

int failures = 0;
#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                    \
    }                                                                \
  } while (0)

constexpr uint64_t kP = 1, kRw = 2, kPs = 0x80;

// A 16 MiB guest whose page tables are written by hand; table frames from 1 MiB.
struct Guest {
  std::vector<uint8_t> ram = std::vector<uint8_t>(16 << 20);
  uint64_t next = 0x100000;
  uint64_t Alloc() { uint64_t f = next; next += 0x1000; return f; }
  void Put(uint64_t pa, uint64_t v) { memcpy(&ram[pa], &v, 8); }
  uint64_t Get(uint64_t pa) const { uint64_t v; memcpy(&v, &ram[pa], 8); return v; }
  static uint64_t Index(uint64_t va, int level) { return (va >> (12 + 9 * (level - 1))) & 0x1ff; }
  void Map(uint64_t root, int levels, uint64_t va, uint64_t pa, int leaf_level) {
    uint64_t table = root;
    for (int level = levels; level > leaf_level; --level) {
      uint64_t at = table + Index(va, level) * 8;
      if ((Get(at) & kP) == 0) Put(at, Alloc() | kP | kRw);
      table = Get(at) & 0x000ffffffffff000ull;
    }
    Put(table + Index(va, leaf_level) * 8, pa | kP | kRw | (leaf_level > 1 ? kPs : 0) | (1ull << 63));
  }
  std::unique_ptr<RamFile> Write(const std::string& path) const {
    FILE* f = fopen(path.c_str(), "wb");
    fwrite(ram.data(), 1, ram.size(), f);
    fclose(f);
    std::string error;
    auto file = RamFile::Open(path, &error);
    if (!file) fprintf(stderr, "%s\n", error.c_str());
    return file;
  }
};

std::string TempPath(const char* name) {
  const char* dir = getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/iv-core-" + std::to_string(getpid()) + "-" + name;
}

std::vector<RamRange> Flat(const RamFile& f) { return {{0, 0, f.size()}}; }

void TestPaging(int levels) {
  Guest g;
  uint64_t root = g.Alloc();
  uint64_t high = levels == 5 ? 0xff11000000000000ull : 0xffff888000000000ull;
  g.Map(root, levels, high + 0x1000, 0x400000, 1);
  g.Map(root, levels, high + 0x2000, 0x403000, 1);
  g.Map(root, levels, 0xffffffff81000000ull, 0x200000, 2);
  g.Map(root, levels, high + 0x40000000, 0, 3);
  memcpy(&g.ram[0x400ffe], "he", 2);
  memcpy(&g.ram[0x403000], "world", 5);
  std::string path = TempPath("paging");
  auto file = g.Write(path);
  PageWalker w(file.get(), Flat(*file), root | 0xfff, levels);  // low bits of the root are ignored
  uint64_t pa = 0;
  CHECK(w.Translate(high + 0x1234, &pa) && pa == 0x400234);
  CHECK(w.Translate(0xffffffff81123456ull, &pa) && pa == 0x323456);
  CHECK(w.Translate(high + 0x40000000 + 0x12345678, &pa) && pa == 0x12345678);
  uint8_t buf[7];
  uint64_t failed = 0;
  CHECK(w.ReadVirtual(high + 0x1ffe, 7, buf, &failed) && memcmp(buf, "heworld", 7) == 0);
  CHECK(!w.Translate(high + 0x3000, &pa));
  CHECK(!w.ReadVirtual(high + 0x2ffe, 8, buf, &failed) && failed == high + 0x3000);
  CHECK(!w.Translate(0x0000800000000000ull, &pa));  // non-canonical
  if (levels == 4) CHECK(!w.Translate(0xff11000000001000ull, &pa));
  CHECK(w.HostPointer(high + 0x1ff8, 8) == file->At(0x400ff8, 8));
  CHECK(w.HostPointer(high + 0x1ffc, 8) == nullptr);  // crosses a page
  // Linear shortcuts translate without a walk, even where the tables say nothing.
  w.SetLinear({{high + 0x3000, 0x500000, 0x1000}});
  CHECK(w.Translate(high + 0x3010, &pa) && pa == 0x500010);
  w.SetLinear({});
  CHECK(!w.Translate(high + 0x3010, &pa));
  unlink(path.c_str());
}

// The translation cache: a changed page table is seen after ClearCache (the start of a scan), not
// before; a cleared entry is walked again, and a walk that now fails is not answered from the cache.
void TestTranslationCache() {
  Guest g;
  uint64_t root = g.Alloc();
  uint64_t va = 0xffff888000001000ull;
  g.Map(root, 4, va, 0x400000, 1);
  std::string path = TempPath("tlb");
  auto file = g.Write(path);
  PageWalker w(file.get(), Flat(*file), root, 4);
  uint64_t leaf = root;
  for (int level = 4; level > 1; --level) leaf = g.Get(leaf + Guest::Index(va, level) * 8) & 0x000ffffffffff000ull;
  leaf += Guest::Index(va, 1) * 8;
  auto rewrite = [&](uint64_t v) {
    FILE* f = fopen(path.c_str(), "r+b");
    fseek(f, static_cast<long>(leaf), SEEK_SET);
    fwrite(&v, 8, 1, f);
    fclose(f);
  };
  uint64_t pa = 0;
  CHECK(w.Translate(va + 0x10, &pa) && pa == 0x400010);
  rewrite(0x403000 | kP);
  CHECK(w.Translate(va + 0x10, &pa) && pa == 0x400010);  // cached within a scan
  w.ClearCache();
  CHECK(w.Translate(va + 0x10, &pa) && pa == 0x403010);
  rewrite(0);
  w.ClearCache();
  CHECK(!w.Translate(va + 0x10, &pa));
  // Many pages through the fixed-size cache: every answer is still the walk's.
  for (uint64_t i = 0; i < 3 * 4096; ++i) g.Map(root, 4, 0xffffc90000000000ull + i * 0x1000, 0x800000 + (i % 512) * 0x1000, 1);
  auto file2 = g.Write(path);
  PageWalker w2(file2.get(), Flat(*file2), root, 4);
  for (int pass = 0; pass < 2; ++pass)
    for (uint64_t i = 0; i < 3 * 4096; i += 7)
      CHECK(w2.Translate(0xffffc90000000000ull + i * 0x1000 + 8, &pa) && pa == 0x800000 + (i % 512) * 0x1000 + 8);
  unlink(path.c_str());
}

void TestHostileAndLayout() {
  Guest g;
  uint64_t root = g.Alloc();
  g.Put(root + 511 * 8, 0x7ffffffff000ull | kP);  // beyond RAM
  g.Put(root + 510 * 8, root | kP);               // self-reference
  std::string path = TempPath("hostile");
  auto file = g.Write(path);
  PageWalker w(file.get(), Flat(*file), root, 4);
  uint64_t pa;
  CHECK(!w.Translate(0xffffff8000000000ull, &pa));
  uint64_t recursive = 0xffff000000000000ull | (510ull << 39) | (510ull << 30) | (510ull << 21) | (510ull << 12);
  CHECK(w.Translate(recursive, &pa) && pa == root);
  // A split layout: guest-physical 4 GiB is file offset 8 MiB; nothing straddles a range.
  PageWalker split(file.get(), {{0, 0, 8 << 20}, {1ull << 32, 8 << 20, 8 << 20}}, root, 4);
  CHECK(split.Phys((1ull << 32) + 16, 8) == file->At((8 << 20) + 16, 8));
  CHECK(split.Phys((8 << 20) - 4, 8) == nullptr);
  CHECK(split.Phys(9 << 20, 1) == nullptr);
  CHECK(CheckRamLayout({}) != "");
  CHECK(CheckRamLayout({{~0ull - 5, 0, 16}}) != "");
  CHECK(CheckRamLayout({{0, 0, 16}}) == "");
  CHECK(CheckLinearRegions(std::vector<LinearRegion>(9, {0, 0, 1})) != "");
  // The file itself: bounds, search, close.
  CHECK(file->At(file->size() - 8, 8) != nullptr && file->At(file->size() - 7, 8) == nullptr && file->At(~0ull, 2) == nullptr);
  const uint8_t self[] = {0x01, 0x00, 0x10, 0x00};  // root | P, little-endian
  CHECK(file->IndexOf(self, 4, 0, file->size()) == static_cast<int64_t>(root + 510 * 8));
  CHECK(file->IndexOf(self, 4, root + 510 * 8 + 1, file->size()) == -1);
  CHECK(file->IndexOf(self, 4, 0, root + 510 * 8) == -1 && file->IndexOf(self, 4, 0, root + 510 * 8 + 1) == static_cast<int64_t>(root + 510 * 8));
  file->Close();
  w.ClearCache();
  CHECK(file->At(0, 1) == nullptr && !w.Translate(recursive, &pa));
  std::string error;
  CHECK(RamFile::Open(path + ".missing", &error) == nullptr && error.find("cannot open") != std::string::npos);
  unlink(path.c_str());
}

constexpr uint64_t kBase = 0xffff888000000000ull;
uint64_t Node(int i) { return kBase + i * 0x100; }

void TestLists() {
  Guest g;
  uint64_t root = g.Alloc();
  g.Map(root, 4, kBase, 0x800000, 2);
  auto at = [](uint64_t va) { return 0x800000 + (va - kBase); };
  auto link = [&](int from, int to) { g.Put(at(Node(from)), Node(to)); };
  uint64_t target = kBase + 0x100000;
  g.Put(at(target) + 4, 4242);
  for (int i = 0; i < 4; ++i) {
    link(i, (i + 1) % 4);
    g.Put(at(Node(i)) + 8, 1000 + i);
  }
  g.Put(at(Node(1)) + 16, target);
  g.Put(at(Node(2)) + 16, 0x1000);                  // below the floor: not followed
  g.Put(at(Node(3)) + 16, 0xffff888040000000ull);   // kernel half, unmapped
  std::string path = TempPath("lists");
  auto file = g.Write(path);
  PageWalker w(file.get(), Flat(*file), root, 4);
  ListHints hints;
  for (int pass = 0; pass < 2; ++pass) {  // the second walk runs with the first one's hints
    ListGather l = GatherList(w, &hints, Node(0), 0, 100, 8, 4);
    CHECK(l.error.empty() && l.nodes == std::vector<uint64_t>({Node(1), Node(2), Node(3)}));
    uint32_t v;
    memcpy(&v, &l.data[8], 4);
    CHECK(l.data.size() == 12 && v == 1003);
  }
  std::vector<uint64_t> nodes;
  std::string error;
  WalkList(w, Node(0), 0, 2, nullptr, &nodes, &error);
  CHECK(error == "more than 2 nodes" && nodes.size() == 2);
  ListGather bad = GatherList(w, &hints, Node(0), 0, 100, 0x1ffe00, 8);  // node 2's bytes lie past the 2 MiB page
  CHECK(bad.error.find("node ") == 0 && bad.nodes.size() == 1 && bad.data.size() == 8);

  RecordSpec spec;
  spec.fields = {{8, 4, 16}, {16, 8, 24}};
  spec.derefs = {{24, 4, 4, 32}};
  spec.stride = 40;
  spec.floor = 0xffff800000000000ull;
  CHECK(CheckRecordSpec(spec) == "");
  RecordWalk r = WalkRecords(w, &hints, Node(0), 0, 100, spec);
  CHECK(r.error.empty() && r.records.size() == 3 * 40);
  auto u32 = [](const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; };
  CHECK(u32(&r.records[8]) == 3 && u32(&r.records[16]) == 1001 && u32(&r.records[32]) == 4242);
  CHECK(u32(&r.records[40 + 8]) == 1 && u32(&r.records[40 + 32]) == 0);  // below the floor
  CHECK(u32(&r.records[80 + 8]) == 1);                                    // unmapped deref
  std::vector<uint64_t> addrs = {Node(1), 0xdead0000};
  std::vector<uint8_t> out(2 * 40, 0xff);
  GatherRecords(w, spec, addrs.data(), 2, out.data());
  CHECK(u32(&out[8]) == 3 && u32(&out[40 + 8]) == 0 && out[42] == 0xad);
  uint8_t data[8], ok[2];
  ReadGather(w, addrs.data(), 2, 8, 4, data, ok);
  CHECK(ok[0] == 1 && ok[1] == 0 && u32(data) == 1001 && u32(data + 4) == 0);
  RecordSpec wide = spec;
  wide.fields.push_back({0, 8, 36});
  CHECK(CheckRecordSpec(wide) == "field 2 does not fit the record");
  wide = spec;
  wide.stride = 12;
  CHECK(CheckRecordSpec(wide) != "");

  link(3, 2);  // 0 -> 1 -> 2 -> 3 -> 2: a cycle that never returns to the head
  file = g.Write(path);
  PageWalker w2(file.get(), Flat(*file), root, 4);
  WalkList(w2, Node(0), 0, 1000, &hints, &nodes, &error);
  CHECK(error.find("cycle") == 0 && nodes == std::vector<uint64_t>({Node(1), Node(2), Node(3)}));
  g.Put(at(Node(2)), 0xffff888040000000ull);  // a wild link
  file = g.Write(path);
  PageWalker w3(file.get(), Flat(*file), root, 4);
  error.clear();
  WalkList(w3, Node(0), 0, 1000, &hints, &nodes, &error);
  CHECK(error == "list link at 0xffff888040000000 is not mapped" && nodes.size() == 3);
  RecordWalk rw = WalkRecords(w3, &hints, Node(0), 0, 1000, spec);  // the wild node's fields end it
  CHECK(rw.error == "node 0xffff888040000000: address 0xffff888040000008 is not mapped" && rw.records.size() == 2 * 40);
  unlink(path.c_str());
}

void TestXArray() {
  Guest g;
  uint64_t root = g.Alloc();
  g.Map(root, 4, kBase, 0x800000, 2);
  auto at = [](uint64_t va) { return 0x800000 + (va - kBase); };
  // xa_node: shift (u8) at 0, slots[64] at 0x28. Slot 1 -> entry, slot 3 -> a value entry,
  // slot 5 -> a child node with shift 7 (not a multiple of 6).
  uint64_t node = kBase + 0x1000, child = kBase + 0x2000;
  g.ram[at(node)] = 6;
  g.Put(at(node) + 0x28 + 8, kBase + 0x5000);
  g.Put(at(node) + 0x28 + 24, 0x11);
  g.Put(at(node) + 0x28 + 40, child | 2);
  g.ram[at(child)] = 7;
  std::string path = TempPath("xarray");
  auto file = g.Write(path);
  PageWalker w(file.get(), Flat(*file), root, 4);
  XArrayWalk x = WalkXArray(w, node | 2, 0, 0x28, {8, 100, 100}, 0xffff800000000000ull, "pids");
  CHECK(x.entries == std::vector<uint64_t>({kBase + 0x5000}) && x.indices == std::vector<uint64_t>({1ull << 6}));
  CHECK(x.errors.size() == 2 && x.errors[1].find("shift 7") == 0);
  XArrayWalk low = WalkXArray(w, 0x10002, 0, 0x28, {8, 100, 100}, 0xffff800000000000ull, "pids");
  CHECK(low.entries.empty() && low.errors.size() == 2 && low.errors[1] == "not a kernel pointer");
  unlink(path.c_str());
}

}  // namespace

int main() {
  TestPaging(4);
  TestPaging(5);
  TestTranslationCache();
  TestHostileAndLayout();
  TestLists();
  TestXArray();
  if (failures > 0) {
    fprintf(stderr, "native core: %d check(s) failed\n", failures);
    return 1;
  }
  printf("native core: all checks passed\n");
  return 0;
}
