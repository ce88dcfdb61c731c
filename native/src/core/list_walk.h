// The one walk of a circular kernel list (struct list_head): every list gather
// (walkList, walkRecords) collects its nodes here. The guest can forge every
// link, so the walk is bounded (max_nodes), cycle-checked (Brent: a loop that
// skips the head is found within a small multiple of its length) and stops at
// an unmapped link, keeping what it read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "page_walker.h"

namespace introvisor {

constexpr uint64_t kMaxListNodes = 1u << 20;

// Host addresses of the links of the last walk from one head. A list changes little
// between scans: prefetching them a few nodes ahead makes the pointer chase mostly hit
// the cache. Hints only (a prefetch never faults); every link is still read and checked.
struct ListHints {
  uint64_t head = 0;
  uint64_t link_offset = 0;
  std::vector<const uint8_t*> links;
};

// Follows list_head.next from the list_head at `head` until it returns to head, collecting
// each container (list_head address minus link_offset) in *nodes. On an unmapped link,
// a cycle that does not pass through head (nodes are then kept once each) or more than
// max_nodes nodes, sets *error and stops. hints may be null.
void WalkList(PageWalker& mem, uint64_t head, uint64_t link_offset, uint64_t max_nodes, ListHints* hints,
              std::vector<uint64_t>* nodes, std::string* error);

}  // namespace introvisor
