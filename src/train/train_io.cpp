#include "train_io.h"

#include <algorithm>
#include <cmath>

#include "check.h"

namespace expar {

namespace {

enum Table {
    kStep,
    kLoss,
    kAux,
    kZ,
    kTotal,
    kLr,
    kGradNorm,
    kTokensPerS,
    kStepTime,
    kPhaseUs,
    kMoePhaseUs,
    kDropFraction,
    kLoad,
    kDropped,
    kRoutingStep,
    kRouting,
    kEvalStep,
    kEvalSplit,
    kEvalLoss,
    kEvalPerplexity,
    kEvalTargets,
    kEvalRequested,
    kEvalDropped,
    kNumTables
};

}  // namespace

TrainLog::TrainLog(Comm& comm, const std::string& path, const Attributes& attributes, const Trainer& trainer)
    : trainer_(trainer), root_(comm.rank() == 0) {
    const hsize_t M = trainer.moe.size(), E = trainer.config.moe.layer.num_experts, P = comm.size();
    load_.assign(M * E, 0);
    dropped_.assign(M * E, 0);
    routing_.assign(M * P * E, 0);
    file_ = create_on_root(comm, path);
    if (!root_) return;
    write_common_attributes(*file_, attributes, comm.size());
    std::string blocks;
    for (const auto& block : trainer.moe)
        blocks += (blocks.empty() ? "" : ",") + std::to_string(block->block());
    file_->attr("moe_blocks", blocks);
    tables_.resize(kNumTables);
    auto table = [&](Table index, const char* name, std::vector<hsize_t> dims, hid_t type,
                     const char* units) {
        tables_[index] = std::make_unique<H5Table>(*file_, name, dims, type, units);
    };
    const hid_t F = H5T_NATIVE_DOUBLE, I = H5T_NATIVE_INT64;
    table(kStep, "/train/step", {}, I, "");
    table(kLoss, "/train/loss", {}, F, "nats");
    table(kAux, "/train/aux_loss", {}, F, "1");
    table(kZ, "/train/z_loss", {}, F, "1");
    table(kTotal, "/train/total_loss", {}, F, "nats");
    table(kLr, "/train/lr", {}, F, "1");
    table(kGradNorm, "/train/grad_norm", {}, F, "1");
    table(kTokensPerS, "/train/tokens_per_s", {}, F, "tokens/s");
    table(kStepTime, "/train/step_time_us", {}, F, "us");
    table(kPhaseUs, "/train/phase_time_us", {kNumTrainPhases}, F, "us");
    table(kMoePhaseUs, "/train/moe_phase_time_us", {kNumPhases}, F, "us");
    table(kDropFraction, "/train/dropped_fraction", {}, F, "fraction of routed assignments");
    std::string phases, moe_phases;
    for (int p = 0; p < kNumTrainPhases; ++p)
        phases += std::string(p ? "," : "") + train_phase_name(TrainPhase(p));
    for (int p = 0; p < kNumPhases; ++p) moe_phases += std::string(p ? "," : "") + phase_name(Phase(p));
    file_->attr("phases", phases, "/train/phase_time_us");
    file_->attr("phases", moe_phases, "/train/moe_phase_time_us");
    if (M > 0) {
        table(kLoad, "/experts/load", {M, E}, I, "tokens");
        table(kDropped, "/experts/dropped", {M, E}, I, "tokens");
        table(kRoutingStep, "/routing/step", {}, I, "");
        table(kRouting, "/routing/counts", {M, P, E}, I, "tokens");
    }
    table(kEvalStep, "/eval/step", {}, I, "");
    table(kEvalSplit, "/eval/split", {}, I, "index into the names attribute");
    file_->attr("names", std::string("train,valid,test"), "/eval/split");
    table(kEvalLoss, "/eval/loss", {}, F, "nats");
    table(kEvalPerplexity, "/eval/perplexity", {}, F, "1");
    table(kEvalTargets, "/eval/num_targets", {}, I, "tokens");
    table(kEvalRequested, "/eval/requested", {}, I, "assignments");
    table(kEvalDropped, "/eval/dropped", {}, I, "assignments");
    file_->flush();
}

TrainLog::~TrainLog() {
    tables_.clear();
    file_.reset();
}

void TrainLog::append_step(int64_t step, const StepResult& r, double step_time_s, double tokens_per_s) {
    if (!root_) return;
    const int64_t E = trainer_.config.moe.layer.num_experts;
    for (size_t m = 0; m < trainer_.moe.size(); ++m) {
        const MoeLayer& layer = trainer_.moe[m]->layer();
        const DispatchLayout& h = layer.layout();
        for (int64_t e = 0; e < E; ++e) {
            int64_t requested = 0, allowed = 0;
            for (int src = 0; src < layer.num_ranks(); ++src) {
                requested += h.requested[src * E + e];
                allowed += h.allowed[src * E + e];
            }
            load_[m * E + e] = requested;
            dropped_[m * E + e] = requested - allowed;
        }
    }
    double phase_us[kNumTrainPhases], moe_us[kNumPhases];
    for (int p = 0; p < kNumTrainPhases; ++p) phase_us[p] = r.phase_s[p] * 1e6;
    for (int p = 0; p < kNumPhases; ++p) moe_us[p] = r.moe_phase_s[p] * 1e6;
    const double lr = r.learning_rate, step_us = step_time_s * 1e6;
    const double drop_fraction = r.requested > 0 ? static_cast<double>(r.dropped) / r.requested : 0.0;
    tables_[kStep]->append(&step);
    tables_[kLoss]->append(&r.loss);
    tables_[kAux]->append(&r.aux_loss);
    tables_[kZ]->append(&r.z_loss);
    tables_[kTotal]->append(&r.total_loss);
    tables_[kLr]->append(&lr);
    tables_[kGradNorm]->append(&r.grad_norm);
    tables_[kTokensPerS]->append(&tokens_per_s);
    tables_[kStepTime]->append(&step_us);
    tables_[kPhaseUs]->append(phase_us);
    tables_[kMoePhaseUs]->append(moe_us);
    tables_[kDropFraction]->append(&drop_fraction);
    if (!trainer_.moe.empty()) {
        tables_[kLoad]->append(load_.data());
        tables_[kDropped]->append(dropped_.data());
    }
}

void TrainLog::append_routing(int64_t step) {
    if (!root_ || trainer_.moe.empty()) return;
    const size_t PE = trainer_.moe[0]->layer().layout().requested.size();
    for (size_t m = 0; m < trainer_.moe.size(); ++m) {
        const std::vector<int64_t>& requested = trainer_.moe[m]->layer().layout().requested;
        std::copy(requested.begin(), requested.end(), routing_.begin() + m * PE);
    }
    tables_[kRoutingStep]->append(&step);
    tables_[kRouting]->append(routing_.data());
}

void TrainLog::append_eval(int64_t step, const EvalResult& r) {
    if (!root_) return;
    const int64_t split = static_cast<int64_t>(r.split);
    tables_[kEvalStep]->append(&step);
    tables_[kEvalSplit]->append(&split);
    tables_[kEvalLoss]->append(&r.loss);
    tables_[kEvalPerplexity]->append(&r.perplexity);
    tables_[kEvalTargets]->append(&r.num_targets);
    tables_[kEvalRequested]->append(&r.requested);
    tables_[kEvalDropped]->append(&r.dropped);
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
    std::unique_ptr<H5File> file = create_on_root(comm, path);

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
    return r;
}

}  // namespace expar
