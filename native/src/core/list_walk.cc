#include "list_walk.h"

#include <cstring>
#include <unordered_set>

#include "format.h"

namespace introvisor {

void WalkList(PageWalker& mem, uint64_t head, uint64_t link_offset, uint64_t max_nodes, ListHints* hints,
              std::vector<uint64_t>* nodes, std::string* error) {
  constexpr size_t kAhead = 16;
  std::vector<const uint8_t*> prev;
  std::vector<const uint8_t*>* seen_links = nullptr;
  if (hints != nullptr) {
    if (hints->head == head && hints->link_offset == link_offset) prev.swap(hints->links);
    hints->links.clear();
    hints->head = head;
    hints->link_offset = link_offset;
    seen_links = &hints->links;
  }
  nodes->clear();
  uint64_t cur = head, tortoise = head, power = 1, lambda = 0;
  for (size_t i = 0;; ++i) {
    if (i + kAhead < prev.size()) __builtin_prefetch(prev[i + kAhead]);
    uint64_t next;
    const uint8_t* link = mem.HostPointer(cur, 8);
    if (link != nullptr) {
      memcpy(&next, link, 8);
    } else if (!mem.ReadU64(cur, &next)) {  // crosses a page, or unmapped
      *error = "list link at " + Hex(cur) + " is not mapped";
      return;
    }
    if (seen_links != nullptr && seen_links->size() < kMaxListNodes) seen_links->push_back(link);
    if (next == head) return;
    if (next == tortoise) {
      *error = "cycle at " + Hex(next) + " that does not return to the head " + Hex(head);
      // Brent's check notices the loop only after going round it: keep each node once.
      std::unordered_set<uint64_t> seen;
      size_t keep = 0;
      while (keep < nodes->size() && seen.insert((*nodes)[keep]).second) ++keep;
      nodes->resize(keep);
      return;
    }
    if (++lambda == power) {
      tortoise = next;
      power <<= 1;
      lambda = 0;
    }
    if (nodes->size() >= max_nodes) {
      *error = "more than " + std::to_string(max_nodes) + " nodes";
      return;
    }
    nodes->push_back(next - link_offset);
    cur = next;
  }
}

}  // namespace introvisor
