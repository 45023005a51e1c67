#include "router/state/cache_index.h"

#include <algorithm>
#include <utility>

namespace prfaas::router {
namespace {

// Block hashes from real workers are XXH3 outputs, but simulated traces use small sequential ids
// (Mooncake hash_ids), so keys are re-mixed before bucketing (splitmix64 finaliser).
inline uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Block hash -> sorted set of workers. Open addressing with linear probing and backward-shift
// deletion (no tombstones, so probe lengths stay short under constant churn of evictions).
// A block is usually cached on a few workers, so up to kInline holders live inside the 32-byte
// bucket itself: a lookup costs one cache miss. Larger sets spill to `overflow_`.
class HolderTable {
 public:
  using Holders = std::span<const WorkerIndex>;

  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap * 7 < n * 10) cap <<= 1;  // max load 0.7
    if (cap > buckets_.size()) Rehash(cap);
  }

  void Prefetch(uint64_t key) const {
    if (!buckets_.empty()) __builtin_prefetch(&buckets_[Mix(key) & mask_]);
  }

  Holders Find(uint64_t key) const {
    if (buckets_.empty()) return {};
    for (size_t i = Mix(key) & mask_;; i = (i + 1) & mask_) {
      const Bucket& b = buckets_[i];
      if (b.n == 0) return {};
      if (b.key == key) return View(b);
    }
  }

  void Add(uint64_t key, WorkerIndex w) {
    if ((size_ + 1) * 10 > buckets_.size() * 7) Rehash(buckets_.empty() ? 16 : buckets_.size() * 2);
    size_t i = Mix(key) & mask_;
    for (;; i = (i + 1) & mask_) {
      Bucket& b = buckets_[i];
      if (b.n == 0) break;
      if (b.key == key) {
        if (Insert(b, w)) Counted(w, +1);
        return;
      }
    }
    buckets_[i].key = key;
    buckets_[i].n = 1;
    buckets_[i].w[0] = w;
    ++size_;
    Counted(w, +1);
  }

  void Remove(uint64_t key, WorkerIndex w) {
    if (buckets_.empty()) return;
    for (size_t i = Mix(key) & mask_;; i = (i + 1) & mask_) {
      Bucket& b = buckets_[i];
      if (b.n == 0) return;
      if (b.key != key) continue;
      if (Erase(b, w)) {
        Counted(w, -1);
        if (b.n == 0) EraseBucket(i);
      }
      return;
    }
  }

  void RemoveWorker(WorkerIndex w) {
    // Collect first: erasing shifts later buckets backwards, which would skip some in one pass.
    std::vector<uint64_t> emptied;
    for (Bucket& b : buckets_) {
      if (b.n == 0) continue;
      if (Erase(b, w)) {
        Counted(w, -1);
        if (b.n == 0) {
          b.n = kDying;  // keeps probe chains intact until the bucket is erased below
          emptied.push_back(b.key);
        }
      }
    }
    for (uint64_t key : emptied) {
      for (size_t i = Mix(key) & mask_;; i = (i + 1) & mask_) {
        if (buckets_[i].key == key && buckets_[i].n == kDying) {
          EraseBucket(i);
          break;
        }
      }
    }
  }

  void Clear() {
    buckets_.assign(buckets_.size(), Bucket{});
    overflow_.clear();
    free_overflow_.clear();
    size_ = entries_ = 0;
    per_worker_.clear();
  }

  size_t keys() const { return size_; }
  size_t entries() const { return entries_; }
  size_t entries_of(WorkerIndex w) const { return w < per_worker_.size() ? per_worker_[w] : 0; }

 private:
  static constexpr uint32_t kInline = 5;
  static constexpr uint32_t kDying = UINT32_MAX;  // emptied during RemoveWorker, erased after
  // n == 0: empty bucket. n <= kInline: holders in w[0..n). Otherwise w[0] indexes overflow_.
  struct Bucket {
    uint64_t key = 0;
    uint32_t n = 0;
    WorkerIndex w[kInline] = {};
  };
  static_assert(sizeof(Bucket) == 32);

  Holders View(const Bucket& b) const {
    if (b.n <= kInline) return Holders(b.w, b.n);
    const auto& v = overflow_[b.w[0]];
    return Holders(v.data(), v.size());
  }

  // Inserts w into b's sorted set; false if already present.
  bool Insert(Bucket& b, WorkerIndex w) {
    if (b.n < kInline) {
      WorkerIndex* end = b.w + b.n;
      WorkerIndex* it = std::lower_bound(b.w, end, w);
      if (it != end && *it == w) return false;
      std::copy_backward(it, end, end + 1);
      *it = w;
      ++b.n;
      return true;
    }
    if (b.n == kInline) {
      if (std::binary_search(b.w, b.w + kInline, w)) return false;
      std::vector<WorkerIndex> v(b.w, b.w + kInline);
      v.insert(std::lower_bound(v.begin(), v.end(), w), w);
      uint32_t slot;
      if (!free_overflow_.empty()) {
        slot = free_overflow_.back();
        free_overflow_.pop_back();
        overflow_[slot] = std::move(v);
      } else {
        slot = static_cast<uint32_t>(overflow_.size());
        overflow_.push_back(std::move(v));
      }
      b.w[0] = slot;
      b.n = kInline + 1;
      return true;
    }
    auto& v = overflow_[b.w[0]];
    auto it = std::lower_bound(v.begin(), v.end(), w);
    if (it != v.end() && *it == w) return false;
    v.insert(it, w);
    ++b.n;
    return true;
  }

  // Removes w from b's set; false if absent. Moves a set that shrinks to kInline back inline.
  bool Erase(Bucket& b, WorkerIndex w) {
    if (b.n <= kInline) {
      WorkerIndex* end = b.w + b.n;
      WorkerIndex* it = std::lower_bound(b.w, end, w);
      if (it == end || *it != w) return false;
      std::copy(it + 1, end, it);
      --b.n;
      return true;
    }
    const uint32_t slot = b.w[0];
    auto& v = overflow_[slot];
    auto it = std::lower_bound(v.begin(), v.end(), w);
    if (it == v.end() || *it != w) return false;
    v.erase(it);
    --b.n;
    if (b.n == kInline) {
      std::copy(v.begin(), v.end(), b.w);
      v.clear();
      v.shrink_to_fit();
      free_overflow_.push_back(slot);
    }
    return true;
  }

  // Keeps the entry totals (overall and per worker: the router's index-size gauges) exact.
  void Counted(WorkerIndex w, int delta) {
    if (w >= per_worker_.size()) per_worker_.resize(w + 1, 0);
    per_worker_[w] += static_cast<size_t>(delta);  // wraps back for -1; never below 0
    entries_ += static_cast<size_t>(delta);
  }

  void EraseBucket(size_t i) {
    --size_;
    // Backward shift: move each following entry whose home is not in (i, j] into the hole.
    size_t j = i;
    for (;;) {
      j = (j + 1) & mask_;
      if (buckets_[j].n == 0) break;
      const size_t home = Mix(buckets_[j].key) & mask_;
      const bool home_in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
      if (!home_in_range) {
        buckets_[i] = buckets_[j];
        i = j;
      }
    }
    buckets_[i] = Bucket{};
  }

  void Rehash(size_t cap) {
    std::vector<Bucket> old = std::move(buckets_);
    buckets_.assign(cap, Bucket{});
    mask_ = cap - 1;
    for (const Bucket& b : old) {
      if (b.n == 0) continue;
      size_t i = Mix(b.key) & mask_;
      while (buckets_[i].n != 0) i = (i + 1) & mask_;
      buckets_[i] = b;
    }
  }

  std::vector<Bucket> buckets_;
  size_t mask_ = 0;
  size_t size_ = 0;                 // occupied buckets (distinct keys)
  size_t entries_ = 0;              // (key, worker) pairs
  std::vector<size_t> per_worker_;  // (key, worker) pairs by worker
  std::vector<std::vector<WorkerIndex>> overflow_;
  std::vector<uint32_t> free_overflow_;
};

}  // namespace

class CacheIndex::Impl {
 public:
  explicit Impl(Options o) : options(o) {
    if (o.expected_blocks > 0) {
      attention.Reserve(o.expected_blocks);
      if (o.hybrid) checkpoints.Reserve(o.expected_blocks / 4 + 16);
    }
  }
  Options options;
  HolderTable attention;
  HolderTable checkpoints;
};

CacheIndex::CacheIndex() : CacheIndex(Options{}) {}
CacheIndex::CacheIndex(Options options) : impl_(std::make_unique<Impl>(options)) {}
CacheIndex::~CacheIndex() = default;
CacheIndex::CacheIndex(CacheIndex&&) noexcept = default;
CacheIndex& CacheIndex::operator=(CacheIndex&&) noexcept = default;

void CacheIndex::AddBlocks(WorkerIndex worker, std::span<const uint64_t> hashes) {
  for (uint64_t h : hashes) impl_->attention.Add(h, worker);
}
void CacheIndex::RemoveBlocks(WorkerIndex worker, std::span<const uint64_t> hashes) {
  for (uint64_t h : hashes) impl_->attention.Remove(h, worker);
}
void CacheIndex::AddCheckpoints(WorkerIndex worker, std::span<const uint64_t> hashes) {
  for (uint64_t h : hashes) impl_->checkpoints.Add(h, worker);
}
void CacheIndex::RemoveCheckpoints(WorkerIndex worker, std::span<const uint64_t> hashes) {
  for (uint64_t h : hashes) impl_->checkpoints.Remove(h, worker);
}
void CacheIndex::RemoveWorker(WorkerIndex worker) {
  impl_->attention.RemoveWorker(worker);
  impl_->checkpoints.RemoveWorker(worker);
}
void CacheIndex::Clear() {
  impl_->attention.Clear();
  impl_->checkpoints.Clear();
}
bool CacheIndex::hybrid() const {
  return impl_->options.hybrid;
}

CacheIndexStats CacheIndex::stats() const {
  return CacheIndexStats{impl_->attention.keys(), impl_->attention.entries(),
                         impl_->checkpoints.keys(), impl_->checkpoints.entries()};
}

void CacheIndex::Match(std::span<const uint64_t> chain, std::vector<WorkerHit>* out) const {
  out->clear();
  if (chain.empty()) return;
  const HolderTable& attention = impl_->attention;
  const HolderTable& checkpoints = impl_->checkpoints;
  const HolderTable::Holders first = attention.Find(chain[0]);
  if (first.empty()) return;
  for (WorkerIndex w : first) out->push_back(WorkerHit{w, 0, 0});

  // `alive` holds positions in `out` of workers that held every block so far; it stays sorted by
  // worker because `out` is. Each step intersects it with the holders of the next block. Buckets
  // kPrefetch blocks ahead are prefetched so the DRAM misses of a long chain overlap.
  constexpr size_t kPrefetch = 16;
  const bool hybrid = impl_->options.hybrid;
  for (size_t i = 1; i < std::min(chain.size(), kPrefetch); ++i) {
    attention.Prefetch(chain[i]);
    if (hybrid) checkpoints.Prefetch(chain[i]);
  }
  std::vector<uint32_t> alive(out->size());
  for (uint32_t i = 0; i < alive.size(); ++i) alive[i] = i;
  for (size_t i = 0; i < chain.size() && !alive.empty(); ++i) {
    if (i + kPrefetch < chain.size()) {
      attention.Prefetch(chain[i + kPrefetch]);
      if (hybrid) checkpoints.Prefetch(chain[i + kPrefetch]);
    }
    const HolderTable::Holders holders = i == 0 ? first : attention.Find(chain[i]);
    if (holders.empty()) break;
    size_t kept = 0;
    auto h = holders.begin();
    for (uint32_t pos : alive) {
      const WorkerIndex w = (*out)[pos].worker;
      while (h != holders.end() && *h < w) ++h;
      if (h != holders.end() && *h == w) alive[kept++] = pos;
    }
    alive.resize(kept);
    const uint32_t blocks = static_cast<uint32_t>(i + 1);
    for (uint32_t pos : alive) (*out)[pos].attention_blocks = blocks;
    if (hybrid && !alive.empty()) {
      const HolderTable::Holders ckpt = checkpoints.Find(chain[i]);
      auto c = ckpt.begin();
      for (uint32_t pos : alive) {
        const WorkerIndex w = (*out)[pos].worker;
        while (c != ckpt.end() && *c < w) ++c;
        if (c != ckpt.end() && *c == w) (*out)[pos].effective_blocks = blocks;
      }
    }
  }
  if (!hybrid) {
    for (WorkerHit& hit : *out) hit.effective_blocks = hit.attention_blocks;
  }
}

WorkerEntries CacheIndex::entries_of(WorkerIndex worker) const {
  return WorkerEntries{impl_->attention.entries_of(worker), impl_->checkpoints.entries_of(worker)};
}

std::vector<WorkerHit> CacheIndex::Match(std::span<const uint64_t> chain) const {
  std::vector<WorkerHit> out;
  Match(chain, &out);
  return out;
}

}  // namespace prfaas::router
