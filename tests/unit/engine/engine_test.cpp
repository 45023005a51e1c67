// Engine behaviour: agreement with the float64 reference model, batch-composition invariance,
// prefix resume, export/import exactness, pools and accounting.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/engine.h"
#include "reference_model.h"

namespace prfaas::engine {
namespace {

using kernels::cpu::SampleToken;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    config_ = PresetModelConfig("tiny").value();
    weights_ = std::make_shared<ModelWeights>(SyntheticWeights(config_, seed_).value());
  }
  std::unique_ptr<Engine> MakeEngine(EngineOptions opt = {}) {
    auto e = Engine::Create(config_, weights_, opt);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(e).value();
  }
  std::vector<int32_t> Prompt(int64_t n) {
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(config_.vocab_size) - 1);
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (auto& t : p) t = d(rng_);
    return p;
  }
  // Greedy continuation of `n` tokens starting from `first`, returning tokens and all logits.
  static std::vector<int32_t> GreedyDecode(Engine& e, SequenceId s, int32_t first, int n,
                                           std::vector<float>* all_logits = nullptr) {
    std::vector<int32_t> out;
    int32_t tok = first;
    std::vector<float> logits;
    for (int i = 0; i < n; ++i) {
      EXPECT_TRUE(e.Decode({&s, 1}, {&tok, 1}, &logits).ok());
      if (all_logits) all_logits->insert(all_logits->end(), logits.begin(), logits.end());
      tok = SampleToken(logits, {}, 0);
      out.push_back(tok);
    }
    return out;
  }
  uint32_t seed_ = 0;
  std::mt19937 rng_;
  ModelConfig config_;
  std::shared_ptr<ModelWeights> weights_;
};

void ExpectLogitsClose(const float* got, const double* want, int64_t n, double rtol) {
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(want[i]));
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_FALSE(std::isnan(got[i]));
    ASSERT_NEAR(got[i], want[i], rtol * scale) << "at " << i;
  }
}

TEST_F(EngineTest, PrefillAndDecodeMatchFloat64Reference) {
  SCOPED_TRACE(seed_);
  EngineOptions opt;
  opt.prefill_chunk = 64;
  opt.kv_block_size = 16;
  auto e = MakeEngine(opt);
  for (int64_t len : {1, 3, 63, 64, 65, 150}) {
    auto prompt = Prompt(len + 5);
    auto want = testing::ReferenceForward(config_, *weights_, prompt);
    const int64_t v = config_.vocab_size;
    SequenceId s = e->AddSequence().value();
    std::vector<int32_t> head(prompt.begin(), prompt.begin() + len);
    std::vector<float> logits(v, std::nanf(""));
    ASSERT_TRUE(e->Prefill({&s, 1}, {&head, 1}, &logits).ok());
    SCOPED_TRACE(::testing::Message() << "len=" << len);
    ExpectLogitsClose(logits.data(), &want[(len - 1) * v], v, 2e-4);
    for (int64_t i = len; i < len + 5; ++i) {
      const int32_t tok = prompt[i];
      std::fill(logits.begin(), logits.end(), std::nanf(""));
      ASSERT_TRUE(e->Decode({&s, 1}, {&tok, 1}, &logits).ok());
      ExpectLogitsClose(logits.data(), &want[i * v], v, 2e-4);
    }
    ASSERT_TRUE(e->Release(s).ok());
  }
  EXPECT_EQ(e->Stats().kv_blocks_free, opt.num_kv_blocks);
  EXPECT_EQ(e->Stats().state_slots_free, opt.num_state_slots);
}

TEST_F(EngineTest, BatchCompositionDoesNotChangeResults) {
  SCOPED_TRACE(seed_);
  auto e = MakeEngine();
  const std::vector<int64_t> lens = {5, 70, 1, 33, 130};
  std::vector<std::vector<int32_t>> prompts;
  for (auto l : lens) prompts.push_back(Prompt(l));
  const int64_t v = config_.vocab_size;
  // Prefill all together vs each alone.
  std::vector<SequenceId> together, alone;
  for (size_t i = 0; i < lens.size(); ++i) together.push_back(e->AddSequence().value());
  std::vector<float> lt, la;
  ASSERT_TRUE(e->Prefill(together, prompts, &lt).ok());
  for (size_t i = 0; i < lens.size(); ++i) {
    alone.push_back(e->AddSequence().value());
    ASSERT_TRUE(e->Prefill({&alone[i], 1}, {&prompts[i], 1}, &la).ok());
    for (int64_t j = 0; j < v; ++j) ASSERT_EQ(lt[i * v + j], la[j]) << "prefill seq " << i;
  }
  // Decode: full batch, then the "alone" copies in rotating subsets and orders.
  for (int step = 0; step < 6; ++step) {
    std::vector<int32_t> toks = Prompt(static_cast<int64_t>(lens.size()));
    ASSERT_TRUE(e->Decode(together, toks, &lt).ok());
    std::vector<size_t> order(lens.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng_);
    // Split the shuffled order into two batches of different sizes.
    const size_t cut = 1 + static_cast<size_t>(step) % (order.size() - 1);
    for (auto [b, e2] : {std::pair<size_t, size_t>{0, cut}, {cut, order.size()}}) {
      std::vector<SequenceId> ids;
      std::vector<int32_t> bt;
      for (size_t k = b; k < e2; ++k) {
        ids.push_back(alone[order[k]]);
        bt.push_back(toks[order[k]]);
      }
      ASSERT_TRUE(e->Decode(ids, bt, &la).ok());
      for (size_t k = b; k < e2; ++k)
        for (int64_t j = 0; j < v; ++j)
          ASSERT_EQ(la[(k - b) * v + j], lt[order[k] * v + j])
              << "step " << step << " seq " << order[k];
    }
  }
}

// Runs prefill + 32 greedy tokens in engine A; moves the sequence to a fresh engine B after the
// prefill and checks B produces exactly the same tokens and logits.
TEST_F(EngineTest, ExportImportContinuesBitExactly) {
  SCOPED_TRACE(seed_);
  EngineOptions opt;
  opt.prefill_chunk = 64;
  opt.kv_block_size = 16;
  auto a = MakeEngine(opt);
  auto b = MakeEngine(opt);
  auto prompt = Prompt(150);
  SequenceId sa = a->AddSequence().value();
  std::vector<float> logits;
  ASSERT_TRUE(a->Prefill({&sa, 1}, {&prompt, 1}, &logits).ok());
  const int32_t first = SampleToken(logits, {}, 0);
  auto ex = a->Export(sa, 0, 150, /*include_state=*/true);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->segments.size(), 1u + 3u * 2u);  // 1 attention layer, 3 GDN layers x (conv, ssm)
  std::vector<float> la, lb;
  auto ta = GreedyDecode(*a, sa, first, 32, &la);
  SequenceId sb = b->AddSequence().value();
  ASSERT_TRUE(b->Import(sb, *ex).ok());
  EXPECT_EQ(b->Length(sb).value(), 150);
  auto tb = GreedyDecode(*b, sb, first, 32, &lb);
  EXPECT_EQ(ta, tb);
  EXPECT_EQ(la, lb);
  // Exporting without state, or a partial range with state, is refused / incomplete.
  EXPECT_FALSE(a->Export(sa, 0, 100, true).ok());
  auto kv_only = a->Export(sa, 0, 100, false);
  ASSERT_TRUE(kv_only.ok());
  SequenceId sc = b->AddSequence().value();
  EXPECT_FALSE(b->Import(sc, *kv_only).ok());  // GDN state missing
  auto bad = *ex;
  bad.model_fingerprint ^= 1;
  EXPECT_FALSE(b->Import(sc, bad).ok());
  bad = *ex;
  bad.segments[0].bytes.pop_back();
  EXPECT_FALSE(b->Import(sc, bad).ok());
}

// A holds a prefix-cache hit: a second sequence starts from the first one's blocks and state
// snapshot, prefills only its suffix, and must match a full prefill bit for bit; then its export
// continues bit-exactly in B, also when B already holds the prefix itself.
TEST_F(EngineTest, PrefixResumeAndExportWithPrefixHit) {
  SCOPED_TRACE(seed_);
  EngineOptions opt;
  opt.prefill_chunk = 50;  // prefix length 100 is a chunk multiple
  opt.kv_block_size = 64;  // ... but not a block multiple: the shared tail block is copied on write
  auto a = MakeEngine(opt);
  auto b = MakeEngine(opt);
  auto full = MakeEngine(opt);
  auto prefix = Prompt(100);
  auto suffix1 = Prompt(37), suffix2 = Prompt(61);
  std::vector<float> logits;
  SequenceId s1 = a->AddSequence().value();
  ASSERT_TRUE(a->Prefill({&s1, 1}, {&prefix, 1}, &logits).ok());
  SnapshotId snap = a->SnapshotState(s1).value();
  auto blocks = a->BlockTable(s1).value();
  ASSERT_EQ(blocks.size(), 2u);
  ASSERT_TRUE(a->Prefill({&s1, 1}, {&suffix1, 1}, &logits).ok());  // s1 writes its own tail block
  const int32_t s1_next = SampleToken(logits, {}, 0);

  // The snapshot was taken at 100 tokens: other lengths are refused.
  EXPECT_FALSE(a->AddSequenceFromPrefix({blocks.data(), 1}, 64, snap).ok());
  // s1 has since written past token 100 into its tail block, so the shared block 1 is s1's
  // current block: the new sequence must copy it before writing token 100 onward.
  SequenceId s2 = a->AddSequenceFromPrefix(blocks, 100, snap).value();
  std::vector<float> l2;
  ASSERT_TRUE(a->Prefill({&s2, 1}, {&suffix2, 1}, &l2).ok());

  // Reference: the whole prompt prefilled from scratch in another engine.
  std::vector<int32_t> whole = prefix;
  whole.insert(whole.end(), suffix2.begin(), suffix2.end());
  SequenceId sf = full->AddSequence().value();
  std::vector<float> lf;
  ASSERT_TRUE(full->Prefill({&sf, 1}, {&whole, 1}, &lf).ok());
  ASSERT_EQ(l2, lf);
  const int32_t first = SampleToken(l2, {}, 0);

  auto ex = a->Export(s2, 0, 161, true);
  ASSERT_TRUE(ex.ok());
  std::vector<float> la, lb, lfull;
  auto ta = GreedyDecode(*a, s2, first, 32, &la);
  auto tf = GreedyDecode(*full, sf, first, 32, &lfull);
  EXPECT_EQ(ta, tf);
  EXPECT_EQ(la, lfull);
  SequenceId sb = b->AddSequence().value();
  ASSERT_TRUE(b->Import(sb, *ex).ok());
  EXPECT_EQ(GreedyDecode(*b, sb, first, 32, &lb), ta);
  EXPECT_EQ(lb, la);

  // s1 (sharing the prefix blocks) is unaffected by s2's copy-on-write.
  auto s1_ref = MakeEngine(opt);
  std::vector<int32_t> p1 = prefix;
  p1.insert(p1.end(), suffix1.begin(), suffix1.end());
  SequenceId r1 = s1_ref->AddSequence().value();
  ASSERT_TRUE(s1_ref->Prefill({&r1, 1}, {&p1, 1}, &logits).ok());
  EXPECT_EQ(GreedyDecode(*a, s1, s1_next, 8), GreedyDecode(*s1_ref, r1, s1_next, 8));

  // B already holds the prefix (its own prefill); import only tokens [100, 161) + state.
  auto c = MakeEngine(opt);
  SequenceId sc = c->AddSequence().value();
  ASSERT_TRUE(c->Prefill({&sc, 1}, {&prefix, 1}, &logits).ok());
  // Re-create the exporter state at length 161 (s2 has decoded since): use a fresh A sequence.
  SequenceId s3 = a->AddSequenceFromPrefix(blocks, 100, snap).value();
  ASSERT_TRUE(a->Prefill({&s3, 1}, {&suffix2, 1}, &logits).ok());
  auto part = a->Export(s3, 100, 161, true);
  ASSERT_TRUE(part.ok());
  ASSERT_TRUE(c->Import(sc, *part).ok());
  std::vector<float> lc;
  EXPECT_EQ(GreedyDecode(*c, sc, first, 32, &lc), ta);
  EXPECT_EQ(lc, la);
  EXPECT_TRUE(a->ReleaseSnapshot(snap).ok());
}

TEST_F(EngineTest, CachedBlocksPlusImportedSuffixAndStateContinueBitExactly) {
  SCOPED_TRACE(seed_);
  // The decode side of a prefix hit: the receiver holds the first 128 tokens' KV blocks (from an
  // earlier request), starts a sequence from them with no state and imports only KV [128, n) plus
  // the state at n. Its continuation must equal the exporter's bit for bit.
  EngineOptions opt;
  opt.kv_block_size = 64;
  opt.prefill_chunk = 128;  // the shared 128 tokens are one complete prefill piece on both sides
  auto a = MakeEngine(opt);
  auto b = MakeEngine(opt);
  auto shared = Prompt(128);
  auto tail_a = Prompt(73), tail_b = Prompt(50);
  std::vector<int32_t> prompt = shared, earlier = shared;
  prompt.insert(prompt.end(), tail_a.begin(), tail_a.end());
  earlier.insert(earlier.end(), tail_b.begin(), tail_b.end());
  const int64_t n = static_cast<int64_t>(prompt.size());
  std::vector<float> la, lb;
  SequenceId sa = a->AddSequence().value();
  ASSERT_TRUE(a->Prefill({&sa, 1}, {&prompt, 1}, &la).ok());
  const int32_t first = SampleToken(la, {}, 0);

  // B's earlier request shared only the prefix; a cache keeps its first two blocks.
  SequenceId old = b->AddSequence().value();
  ASSERT_TRUE(b->Prefill({&old, 1}, {&earlier, 1}, &lb).ok());
  auto table = b->BlockTable(old).value();
  std::vector<int32_t> cached(table.begin(), table.begin() + 2);
  for (int32_t blk : cached) ASSERT_TRUE(b->RefBlock(blk).ok());
  ASSERT_TRUE(b->Release(old).ok());

  EXPECT_FALSE(b->AddSequenceFromBlocks({cached.data(), 1}, 128).ok());  // needs 2 blocks
  EXPECT_FALSE(b->AddSequenceFromBlocks(cached, -1).ok());
  const int32_t dead = 40;  // never allocated in B
  EXPECT_FALSE(b->AddSequenceFromBlocks({&dead, 1}, 64).ok());
  SequenceId sb = b->AddSequenceFromBlocks(cached, 128).value();
  EXPECT_EQ(b->Length(sb).value(), 128);
  // A suffix that does not start where the sequence ends is refused before anything is written.
  auto wrong = a->Export(sa, 64, n, true).value();
  EXPECT_FALSE(b->Import(sb, wrong).ok());
  auto suffix = a->Export(sa, 128, n, true).value();
  ASSERT_TRUE(b->Import(sb, suffix).ok());
  EXPECT_EQ(b->Length(sb).value(), n);
  std::vector<float> da, db;
  auto ta = GreedyDecode(*a, sa, first, 24, &da);
  auto tb = GreedyDecode(*b, sb, first, 24, &db);
  EXPECT_EQ(ta, tb);
  ASSERT_EQ(da, db);
  for (float x : db) ASSERT_TRUE(std::isfinite(x));

  // The cache's references outlive the sequence; dropping them frees every block.
  ASSERT_TRUE(b->Release(sb).ok());
  EXPECT_EQ(b->Stats().kv_blocks_free, b->Stats().kv_blocks_total - 2);
  for (int32_t blk : cached) ASSERT_TRUE(b->UnrefBlock(blk).ok());
  EXPECT_EQ(b->Stats().kv_blocks_free, b->Stats().kv_blocks_total);
}

TEST_F(EngineTest, PoolsCountBlocksSlotsAndBytes) {
  SCOPED_TRACE(seed_);
  EngineOptions opt;
  opt.kv_block_size = 16;
  opt.num_kv_blocks = 4;
  opt.num_state_slots = 2;
  auto e = MakeEngine(opt);
  const auto st0 = e->Stats();
  // tiny: 1 attention layer x 2 (K,V) x 16 tokens x 2 heads x 16 dims x 4 bytes.
  EXPECT_EQ(st0.kv_bytes_capacity, 4 * (1 * 2 * 16 * 2 * 16 * 4));
  EXPECT_EQ(st0.kv_bytes_used, 0);
  // Per slot: 3 GDN layers x (3 x 128 conv + 4 x 16 x 16 ssm) floats.
  EXPECT_EQ(st0.state_bytes_capacity, 2 * 3 * (3 * 128 + 4 * 16 * 16) * 4);
  SequenceId s = e->AddSequence().value();
  std::vector<float> logits;
  auto p = Prompt(40);
  ASSERT_TRUE(e->Prefill({&s, 1}, {&p, 1}, &logits).ok());
  EXPECT_EQ(e->Stats().kv_blocks_free, 1);
  EXPECT_EQ(e->Stats().kv_bytes_used, 3 * (2 * 16 * 2 * 16 * 4));
  auto big = Prompt(40);
  SequenceId s2 = e->AddSequence().value();
  auto r = e->Prefill({&s2, 1}, {&big, 1}, &logits);
  EXPECT_EQ(r.code(), StatusCode::kResourceExhausted);
  EXPECT_FALSE(e->AddSequence().ok());  // both slots taken
  auto snap = e->SnapshotState(s);
  EXPECT_FALSE(snap.ok());
  ASSERT_TRUE(e->Release(s2).ok());
  ASSERT_TRUE(e->Release(s).ok());
  EXPECT_EQ(e->Stats().kv_blocks_free, 4);
  EXPECT_EQ(e->Stats().state_slots_free, 2);
  EXPECT_FALSE(e->Release(s).ok());
  int32_t bad = 999;
  EXPECT_FALSE(e->Decode({&s, 1}, {&bad, 1}, &logits).ok());
}

TEST_F(EngineTest, DeepSyntheticModelStaysFinite) {
  SCOPED_TRACE(seed_);
  // 64 layers of small width over a 512-token prompt: activations must stay finite
  // (bench/engine_cpu checks 32K).
  ModelConfig c = config_;
  c.num_layers = 64;
  c.layer_types.clear();
  for (int i = 0; i < 64; ++i)
    c.layer_types.push_back((i + 1) % 4 == 0 ? LayerKind::kFullAttention
                                             : LayerKind::kLinearAttention);
  c.hidden_size = 32;
  c.intermediate_size = 32;
  auto w = std::make_shared<ModelWeights>(SyntheticWeights(c, seed_).value());
  EngineOptions opt;
  opt.num_kv_blocks = 64;
  auto e = Engine::Create(c, w, opt).value();
  SequenceId s = e->AddSequence().value();
  auto p = Prompt(512);
  std::vector<float> logits;
  ASSERT_TRUE(e->Prefill({&s, 1}, {&p, 1}, &logits).ok());
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  float mx = 0;
  for (float x : logits) mx = std::max(mx, std::abs(x));
  EXPECT_LT(mx, 100.0f);
  EXPECT_GT(mx, 1e-3f);
}

}  // namespace
}  // namespace prfaas::engine
