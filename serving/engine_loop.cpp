#include "serving/engine_loop.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <span>

namespace prfaas::serving {

EngineLoop::EngineLoop(std::unique_ptr<engine::Engine> engine, LoopOptions options)
    : engine_(std::move(engine)),
      config_(engine_->config()),
      engine_options_(engine_->options()),
      options_(options) {
  if (metrics::Registry* r = options_.registry) {
    auto& batch = r->Histogram("prfaas_worker_batch_size", "Sequences per scheduled step.",
                               {"service"}, metrics::ExponentialBuckets(1, 2, 10));
    prefill_batch_ = &batch.WithLabels({"prefill"});
    decode_batch_ = &batch.WithLabels({"decode"});
    decode_step_ =
        &r->Histogram("prfaas_worker_decode_step_seconds",
                      "One decode step of the continuous batch.", {}, metrics::LatencyBuckets())
             .Get();
    auto& fwd =
        r->Histogram("prfaas_engine_forward_seconds", "One forward pass of the layer stack.",
                     {"phase"}, metrics::LatencyBuckets());
    forward_prefill_ = &fwd.WithLabels({"prefill"});
    forward_decode_ = &fwd.WithLabels({"decode"});
  }
  thread_ = std::thread([this] { Run(); });
}

EngineLoop::~EngineLoop() {
  Stop();
}

void EngineLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngineLoop::Post(std::function<void(engine::Engine&)> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(fn));
  }
  cv_.notify_all();
}

void EngineLoop::SubmitPrefill(engine::SequenceId seq, std::vector<int32_t> tokens,
                               PrefillDone done, PrefillProgress progress) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      prefill_.push_back({seq, std::move(tokens), 0, std::move(done), std::move(progress)});
      cv_.notify_all();
      return;
    }
  }
  done(Cancelled("engine loop stopped"), {});
}

void EngineLoop::SubmitDecode(DecodeJob job) {
  if (job.remaining <= 0) {
    job.on_finish(Finish::kLength, Status::Ok());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      engine::SequenceId id = job.seq;
      decode_.emplace(id, std::move(job));
      cv_.notify_all();
      return;
    }
  }
  job.on_finish(Finish::kCancelled, Cancelled("engine loop stopped"));
}

void EngineLoop::Cancel(engine::SequenceId seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(seq);
  }
  cv_.notify_all();
}

LoopStats EngineLoop::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  LoopStats s = stats_;
  s.prefill_queue = static_cast<int64_t>(prefill_.size());
  s.prefill_tokens_pending = 0;
  for (const auto& p : prefill_) {
    s.prefill_tokens_pending += static_cast<int64_t>(p.tokens.size() - p.done);
  }
  s.decoding = static_cast<int64_t>(decode_.size());
  return s;
}

void EngineLoop::Run() {
  engine::Engine& e = *engine_;
  for (;;) {
    std::deque<std::function<void(engine::Engine&)>> tasks;
    std::vector<engine::SequenceId> cancelled;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stopping_ || !tasks_.empty() || !prefill_.empty() || !decode_.empty() ||
               !cancelled_.empty();
      });
      if (stopping_) break;
      tasks.swap(tasks_);
      cancelled.swap(cancelled_);
    }
    for (auto& t : tasks) t(e);
    for (auto seq : cancelled) {
      std::unique_lock<std::mutex> lock(mu_);
      auto it = decode_.find(seq);
      if (it != decode_.end()) {
        auto job = std::move(it->second);
        decode_.erase(it);
        lock.unlock();
        job.on_finish(Finish::kCancelled, Cancelled("request cancelled"));
        continue;
      }
      auto p = std::find_if(prefill_.begin(), prefill_.end(),
                            [&](const PrefillJob& j) { return j.seq == seq; });
      if (p != prefill_.end()) {
        auto cb = std::move(p->cb);
        prefill_.erase(p);
        lock.unlock();
        cb(Cancelled("request cancelled"), {});
      }
    }
    StepPrefill(e);
    StepDecode(e);
  }
  // Fail whatever is left so no caller waits forever.
  std::deque<PrefillJob> prefill;
  std::map<engine::SequenceId, DecodeJob> decode;
  std::deque<std::function<void(engine::Engine&)>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prefill.swap(prefill_);
    decode.swap(decode_);
    tasks.swap(tasks_);
  }
  for (auto& t : tasks) t(e);  // tasks may be waited on through Call()
  for (auto& p : prefill) p.cb(Cancelled("worker shutting down"), {});
  for (auto& [id, d] : decode) d.on_finish(Finish::kCancelled, Cancelled("worker shutting down"));
}

bool EngineLoop::StepPrefill(engine::Engine& e) {
  // Pick FCFS jobs until the token budget of this step is used. A job contributes tokens up to
  // the next absolute multiple of the engine's prefill chunk, so its chunking never depends on
  // which other jobs shared the step.
  const int64_t chunk = engine_options_.prefill_chunk;
  std::vector<engine::SequenceId> seqs;
  std::vector<std::vector<int32_t>> pieces;
  std::vector<size_t> job_index;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t budget = options_.prefill_tokens_per_step;
    for (size_t i = 0; i < prefill_.size() && budget > 0; ++i) {
      PrefillJob& j = prefill_[i];
      auto len_or = e.Length(j.seq);
      int64_t pos = len_or.ok() ? *len_or : 0;
      int64_t left = static_cast<int64_t>(j.tokens.size() - j.done);
      int64_t to_boundary = chunk - (pos % chunk);
      if (options_.checkpoint_interval > 0) {
        to_boundary = std::min(to_boundary,
                               options_.checkpoint_interval - (pos % options_.checkpoint_interval));
      }
      int64_t take = std::min(left, to_boundary);
      if (!seqs.empty() && take > budget) break;  // never split a chunk to fit the budget
      seqs.push_back(j.seq);
      pieces.emplace_back(j.tokens.begin() + j.done, j.tokens.begin() + j.done + take);
      job_index.push_back(i);
      budget -= take;
    }
  }
  if (seqs.empty()) return false;
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = e.Prefill(seqs, pieces, &logits);
  if (forward_prefill_) {
    forward_prefill_->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    prefill_batch_->Observe(static_cast<double>(seqs.size()));
  }
  const int64_t vocab = config_.vocab_size;
  std::vector<std::pair<PrefillDone, std::pair<Status, std::vector<float>>>> finished;
  std::vector<std::pair<PrefillProgress, engine::SequenceId>> progressed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Walk backwards so erasing keeps earlier indices valid.
    for (size_t k = job_index.size(); k-- > 0;) {
      PrefillJob& j = prefill_[job_index[k]];
      if (!st.ok()) {
        finished.push_back({std::move(j.cb), {st, {}}});
        prefill_.erase(prefill_.begin() + job_index[k]);
        continue;
      }
      j.done += pieces[k].size();
      if (j.progress) progressed.push_back({j.progress, j.seq});
      if (j.done == j.tokens.size()) {
        std::vector<float> last(logits.begin() + k * vocab, logits.begin() + (k + 1) * vocab);
        finished.push_back({std::move(j.cb), {Status::Ok(), std::move(last)}});
        prefill_.erase(prefill_.begin() + job_index[k]);
      }
    }
    stats_.steps++;
  }
  for (auto& [fn, seq] : progressed) {
    auto len = e.Length(seq);
    if (len.ok()) fn(e, *len);
  }
  for (auto it = finished.rbegin(); it != finished.rend(); ++it) {
    it->first(it->second.first, std::move(it->second.second));
  }
  return true;
}

bool EngineLoop::StepDecode(engine::Engine& e) {
  std::vector<engine::SequenceId> seqs;
  std::vector<int32_t> inputs;
  std::vector<DecodeJob*> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : decode_) {
      if (static_cast<int>(seqs.size()) >= options_.max_decode_batch) break;
      seqs.push_back(id);
      inputs.push_back(job.next_input);
      jobs.push_back(&job);
    }
    stats_.last_decode_batch = static_cast<int64_t>(seqs.size());
  }
  if (seqs.empty()) return false;
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = e.Decode(seqs, inputs, &logits);
  if (decode_step_) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    decode_step_->Observe(secs);
    forward_decode_->Observe(secs);
    decode_batch_->Observe(static_cast<double>(seqs.size()));
  }
  const int64_t vocab = config_.vocab_size;
  std::vector<std::pair<DecodeJob, std::pair<Finish, Status>>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < seqs.size(); ++i) {
      DecodeJob& job = *jobs[i];
      Finish fin = Finish::kStop;
      bool finished = false;
      Status why;
      if (!st.ok()) {
        finished = true;
        fin = Finish::kError;
        why = st;
      } else {
        std::span<const float> row(logits.data() + i * vocab, static_cast<size_t>(vocab));
        int32_t tok = kernels::cpu::SampleToken(row, job.sampling, job.counter++);
        job.remaining--;
        job.next_input = tok;
        bool keep = job.on_token(tok);
        if (!keep) {
          finished = true;
          fin = Finish::kCancelled;
          why = Cancelled("stream closed");
        } else if (std::find(job.stop_ids.begin(), job.stop_ids.end(), tok) != job.stop_ids.end()) {
          finished = true;
          fin = Finish::kStop;
        } else if (job.remaining <= 0) {
          finished = true;
          fin = Finish::kLength;
        }
      }
      if (finished) {
        done.push_back({std::move(job), {fin, why}});
        decode_.erase(seqs[i]);
      }
    }
  }
  for (auto& [job, r] : done) job.on_finish(r.first, r.second);
  return true;
}

}  // namespace prfaas::serving
