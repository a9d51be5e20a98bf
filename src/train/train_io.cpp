#include "train_io.h"

#include <algorithm>
#include <cmath>

#include "check.h"

namespace expar {

struct TrainLog::StepRow {
    int64_t step;
    const StepResult& result;
    double step_time_s;
    double tokens_per_s;
};

struct TrainLog::RoutingRow {
    int64_t step;
};

struct TrainLog::EvalRow {
    int64_t step;
    const EvalResult& result;
};

namespace {

// Per step (docs/hdf5.md, "Training log"): every value is global; expert loads and drops summed over
// source ranks from each MoE block's dispatch layout.
std::vector<H5LogField<TrainLog::StepRow>> step_fields(const Trainer& trainer) {
    using Row = TrainLog::StepRow;
    const hsize_t M = trainer.moe.size(), E = trainer.config.moe.layer.num_experts;
    std::vector<H5LogField<Row>> fields = {
        {"/train/step", {}, "", [](const Row& r, int64_t* v) { *v = r.step; }},
        {"/train/loss", {}, "nats", [](const Row& r, double* v) { *v = r.result.loss; }},
        {"/train/aux_loss", {}, "1", [](const Row& r, double* v) { *v = r.result.aux_loss; }},
        {"/train/z_loss", {}, "1", [](const Row& r, double* v) { *v = r.result.z_loss; }},
        {"/train/total_loss", {}, "nats", [](const Row& r, double* v) { *v = r.result.total_loss; }},
        {"/train/lr", {}, "1", [](const Row& r, double* v) { *v = r.result.learning_rate; }},
        {"/train/grad_norm", {}, "1", [](const Row& r, double* v) { *v = r.result.grad_norm; }},
        {"/train/tokens_per_s", {}, "tokens/s", [](const Row& r, double* v) { *v = r.tokens_per_s; }},
        {"/train/step_time_us", {}, "us", [](const Row& r, double* v) { *v = r.step_time_s * 1e6; }},
        {"/train/phase_time_us",
         {kNumTrainPhases},
         "us",
         [](const Row& r, double* v) {
             for (int p = 0; p < kNumTrainPhases; ++p) v[p] = r.result.phase_s[p] * 1e6;
         },
         {{"phases", enum_name_csv<TrainPhase>()}}},
        {"/train/moe_phase_time_us",
         {kNumPhases},
         "us",
         [](const Row& r, double* v) {
             for (int p = 0; p < kNumPhases; ++p) v[p] = r.result.moe_phase_s[p] * 1e6;
         },
         {{"phases", enum_name_csv<Phase>()}, {"simulated_phases", simulated_phase_names()}}},
        {"/train/dropped_fraction",
         {},
         "fraction of routed assignments",
         [](const Row& r, double* v) {
             *v = r.result.requested > 0 ? static_cast<double>(r.result.dropped) / r.result.requested : 0.0;
         }},
    };
    if (M == 0) return fields;
    // counts[src * E + e] summed over source ranks, for every block: [M, E].
    auto per_expert = [&trainer, E](int64_t* v, bool dropped) {
        for (size_t m = 0; m < trainer.moe.size(); ++m) {
            const MoeLayer& layer = trainer.moe[m]->layer();
            const DispatchLayout& h = layer.layout();
            for (hsize_t e = 0; e < E; ++e) {
                int64_t requested = 0, allowed = 0;
                for (int src = 0; src < layer.num_ranks(); ++src) {
                    requested += h.requested[src * E + e];
                    allowed += h.allowed[src * E + e];
                }
                v[m * E + e] = dropped ? requested - allowed : requested;
            }
        }
    };
    fields.push_back(
        {"/experts/load", {M, E}, "tokens", [per_expert](const Row&, int64_t* v) { per_expert(v, false); }});
    fields.push_back({"/experts/dropped", {M, E}, "tokens", [per_expert](const Row&, int64_t* v) {
                          per_expert(v, true);
                      }});
    return fields;
}

// Every K steps, with MoE blocks: each block's [P, E] requested-count matrix.
std::vector<H5LogField<TrainLog::RoutingRow>> routing_fields(const Trainer& trainer, hsize_t P) {
    using Row = TrainLog::RoutingRow;
    const hsize_t M = trainer.moe.size(), E = trainer.config.moe.layer.num_experts;
    return {
        {"/routing/step", {}, "", [](const Row& r, int64_t* v) { *v = r.step; }},
        {"/routing/counts",
         {M, P, E},
         "tokens",
         [&trainer](const Row&, int64_t* v) {
             for (const auto& block : trainer.moe) {
                 const std::vector<int64_t>& requested = block->layer().layout().requested;
                 v = std::copy(requested.begin(), requested.end(), v);
             }
         }},
    };
}

std::vector<H5LogField<TrainLog::EvalRow>> eval_fields() {
    using Row = TrainLog::EvalRow;
    return {
        {"/eval/step", {}, "", [](const Row& r, int64_t* v) { *v = r.step; }},
        {"/eval/split",
         {},
         "index into the names attribute",
         [](const Row& r, int64_t* v) { *v = static_cast<int64_t>(r.result.split); },
         {{"names", "train,valid,test"}}},
        {"/eval/loss", {}, "nats", [](const Row& r, double* v) { *v = r.result.loss; }},
        {"/eval/perplexity", {}, "1", [](const Row& r, double* v) { *v = r.result.perplexity; }},
        {"/eval/num_targets", {}, "tokens", [](const Row& r, int64_t* v) { *v = r.result.num_targets; }},
        {"/eval/requested", {}, "assignments", [](const Row& r, int64_t* v) { *v = r.result.requested; }},
        {"/eval/dropped", {}, "assignments", [](const Row& r, int64_t* v) { *v = r.result.dropped; }},
    };
}

}  // namespace

TrainLog::TrainLog(Comm& comm, const std::string& path, const Attributes& attributes, const Trainer& trainer)
    : trainer_(trainer), root_(comm.rank() == 0) {
    file_ = create_on_root(comm, path, "--log");
    if (!root_) return;
    write_common_attributes(*file_, attributes, comm.size());
    std::string blocks;
    for (const auto& block : trainer.moe)
        blocks += (blocks.empty() ? "" : ",") + std::to_string(block->block());
    file_->attr("moe_blocks", blocks);
    steps_ = std::make_unique<H5LogTable<StepRow>>(file_.get(), step_fields(trainer));
    if (!trainer.moe.empty())
        routing_ =
            std::make_unique<H5LogTable<RoutingRow>>(file_.get(), routing_fields(trainer, comm.size()));
    eval_ = std::make_unique<H5LogTable<EvalRow>>(file_.get(), eval_fields());
    file_->flush();
}

TrainLog::~TrainLog() {
    steps_.reset();
    routing_.reset();
    eval_.reset();
    file_.reset();
}

void TrainLog::append_step(int64_t step, const StepResult& r, double step_time_s, double tokens_per_s) {
    if (root_) steps_->append(StepRow{step, r, step_time_s, tokens_per_s});
}

void TrainLog::append_routing(int64_t step) {
    if (routing_) routing_->append(RoutingRow{step});
}

void TrainLog::append_eval(int64_t step, const EvalResult& r) {
    if (root_) eval_->append(EvalRow{step, r});
}

void TrainLog::write_tag_counts(const EvalResult& r, const std::vector<std::string>& tag_names) {
    if (!root_ || trainer_.moe.empty()) return;
    const hsize_t M = trainer_.moe.size(), E = trainer_.config.moe.layer.num_experts, G = tag_names.size();
    EXPAR_ASSERT(r.tag_counts.size() == M * E * G);
    const std::string path = std::string("/pos/") + to_string(r.split) + "_counts";
    file_->write(path, {M, E, G}, r.tag_counts.data());
    file_->attr("units", std::string("routed assignments"), path);
    std::string names;  // newline-separated: Brown's tags include ',' and '.'
    for (const std::string& name : tag_names) names += name + "\n";
    file_->attr("tags", names, path);
}

void TrainLog::flush() {
    if (file_) file_->flush();
}

void TrainLog::commit(Comm& comm) {
    steps_.reset();
    routing_.reset();
    eval_.reset();
    commit_on_root(comm, file_.get());
}

// ------------------------------------------------------------------------------------------------
// Dump

StepResult write_train_dump(Trainer& t,
                            const std::string& path,
                            const Attributes& attributes,
                            int64_t step,
                            const int32_t* inputs,
                            const int32_t* targets) {
    Comm& comm = t.comm;
    const int P = comm.size();
    const bool root = comm.rank() == 0;
    const int64_t N = t.model.num_rows, V = t.config.model.vocab_size, S = t.config.model.seq_len;
    const hsize_t G = static_cast<hsize_t>(P) * t.config.batch_size;
    std::unique_ptr<H5File> file = create_on_root(comm, path, "--dump");

    // Logits first: the backward turns them into dlogits in place. The router-bias state must not move.
    const int64_t E = t.config.moe.layer.num_experts;
    for (size_t m = 0; m < t.moe.size(); ++m)
        std::copy(t.moe[m]->layer().selection_bias(), t.moe[m]->layer().selection_bias() + E,
                  t.bias_state.begin() + m * E);
    for (auto& block : t.moe) block->set_step(step);
    gpt_forward(t.model, inputs, targets, nullptr);
    t.model.backward_ready = false;
    std::vector<float> local(t.model.acts.logits, t.model.acts.logits + N * V);
    for (size_t m = 0; m < t.moe.size(); ++m)
        t.moe[m]->layer().set_selection_bias(t.bias_state.data() + m * E);
    StepResult r;
    trainer_compute_grads(t, step, inputs, targets, &r);

    std::vector<float> global(root ? static_cast<size_t>(P) * std::max<int64_t>(N * V, 1) : 0);
    comm.gatherv_f32(local.data(), N * V, global.data(), 0);
    if (root) file->write("/logits", {G * S, static_cast<hsize_t>(V)}, global.data());
    for (const auto& [name, ids] :
         {std::pair<const char*, const int32_t*>{"/tokens", inputs}, {"/targets", targets}}) {
        std::vector<float> as_float(ids, ids + N);  // exact: ids < 2^24
        comm.gatherv_f32(as_float.data(), N, global.data(), 0);
        if (!root) continue;
        std::vector<int32_t> all(G * S);
        for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(global[i]);
        file->write(name, {G, static_cast<hsize_t>(S)}, all.data());
    }
    if (root) {
        file->write("/loss", {}, &r.loss);
        file->write("/aux_loss", {}, &r.aux_loss);
        file->write("/z_loss", {}, &r.z_loss);
        file->write("/total_loss", {}, &r.total_loss);
        for (const ParamTensor& p : t.replicated) {
            const std::vector<hsize_t> dims(p.shape.begin(), p.shape.end());
            file->write("/params/" + p.name, dims, p.param);
            file->write("/grads/" + p.name, dims, p.grad);
        }
    }
    for (const ExpertTensor& e : t.experts) {
        std::vector<hsize_t> dims{static_cast<hsize_t>(e.num_global)};
        dims.insert(dims.end(), e.item_shape.begin(), e.item_shape.end());
        std::vector<float> all(root ? e.num_global * e.item_count : 0);
        for (const auto& [prefix, data] :
             {std::pair<const char*, const float*>{"/params/", e.param}, {"/grads/", e.grad}}) {
            comm.gatherv_f32(data, e.num_local * e.item_count, all.data(), 0);
            if (root) file->write(prefix + e.name, dims, all.data());
        }
    }
    if (root) {
        write_common_attributes(*file, attributes, P);
        file->attr("step", step);
    }
    // A dump is one step's snapshot, complete in itself: it replaces the old one as soon as it is written.
    commit_on_root(comm, file.get());
    return r;
}

}  // namespace expar
