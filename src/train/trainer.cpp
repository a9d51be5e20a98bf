#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "check.h"
#include "timer.h"

namespace expar {

void finalize(TrainConfig& c, int num_ranks) {
    validate(c.model);
    EXPAR_REQUIRE(c.batch_size > 0, "--batch-size must be positive (got " << c.batch_size << ")");
    EXPAR_REQUIRE(c.steps > 0, "--steps must be positive (got " << c.steps << ")");
    EXPAR_REQUIRE(std::isfinite(c.learning_rate) && c.learning_rate > 0,
                  "--lr must be positive (got " << c.learning_rate << ")");
    EXPAR_REQUIRE(std::isfinite(c.adamw.weight_decay) && c.adamw.weight_decay >= 0,
                  "--weight-decay must be finite and >= 0 (got " << c.adamw.weight_decay << ")");
    EXPAR_REQUIRE(c.warmup_steps >= 0, "--warmup-steps must be >= 0 (got " << c.warmup_steps << ")");
    EXPAR_REQUIRE(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1,
                  "--min-lr-ratio must be in [0, 1] (got " << c.min_lr_ratio << ")");
    EXPAR_REQUIRE(std::isfinite(c.grad_clip) && c.grad_clip >= 0,
                  "--grad-clip must be >= 0 (0 = off), got " << c.grad_clip);
    EXPAR_REQUIRE(std::isfinite(c.eval_capacity_factor) && c.eval_capacity_factor >= 0,
                  "--eval-capacity-factor must be >= 0 (0 = dropless), got " << c.eval_capacity_factor);
    EXPAR_REQUIRE(c.allreduce_bucket_bytes >= 4, "--allreduce-bucket-bytes must be at least 4");
    c.moe.layer.d_model = c.model.d_model;
    c.moe.layer.tokens_per_rank = c.batch_size * c.model.seq_len;
    if (c.model.moe_every > 0) validate(c.moe, num_ranks);
}

Trainer::Trainer(const TrainConfig& config_in, Comm& comm_in, const LayerCluster* cluster)
    : config(config_in),
      comm(comm_in),
      model((finalize(config, comm_in.size()), config.model), config.batch_size) {
    const int P = comm.size();
    // The buffers fit the roomier of training's and evaluation's capacity factors (0 = dropless = most).
    LayerConfig train_layer = config.moe.layer, eval_layer = config.moe.layer;
    eval_layer.capacity_factor = config.eval_capacity_factor;
    const double buffer_cf = moe_max_recv_rows(eval_layer, P) > moe_max_recv_rows(train_layer, P)
                                 ? config.eval_capacity_factor
                                 : config.moe.layer.capacity_factor;
    replicated = model.tensors;
    allreduce_regions.push_back(
        GradRegion{model.grad_memory.data(), static_cast<int64_t>(model.grad_memory.size())});
    for (int64_t l = 0; l < config.model.num_layers; ++l) {
        if (!model_layer_is_moe(config.model, l)) continue;
        moe.push_back(std::make_unique<MoeFfn>(config.moe, comm, expert_compute, l, cluster, buffer_cf));
        MoeFfn& block = *moe.back();
        gpt_set_ffn(model, l, &block);
        for (const ParamTensor& t : block.replicated_tensors()) replicated.push_back(t);
        for (const ExpertTensor& t : block.expert_tensors()) experts.push_back(t);
        for (const GradRegion& r : block.replicated_grad_regions()) allreduce_regions.push_back(r);
    }
    // AdamW's list: replicated tensors, then each expert tensor's local items one by one (so the weight
    // decay rule sees one expert's shape: matrices decay, biases do not). Items of one expert tensor are
    // adjacent in the list, so their moments are contiguous: one sharded tensor in a checkpoint.
    std::vector<ParamTensor> all = replicated;
    int64_t moment_offset = 0;
    for (const ParamTensor& t : replicated) moment_offset += t.count;
    for (const ExpertTensor& t : experts) {
        expert_moment_offset.push_back(moment_offset);
        for (int64_t i = 0; i < t.num_local; ++i)
            all.push_back(ParamTensor{t.name + "[" + std::to_string(t.first_expert + i) + "]", t.item_shape,
                                      i * t.item_count, t.item_count, t.param + i * t.item_count,
                                      t.grad + i * t.item_count, false});
        moment_offset += t.num_local * t.item_count;
    }
    optimizer = std::make_unique<AdamW>(all, config.adamw);
    gathered.assign(2 * P, 0.0);
    bias_state.assign(moe.size() * config.moe.layer.num_experts, 0.0f);
    const int64_t N = model.num_rows;
    eval_inputs.assign(N, 0);
    eval_targets.assign(N, 0);
    eval_tags.assign(N, 0);
    eval_weights.assign(N, 0.0f);
}

void trainer_init_params(Trainer& t) {
    gpt_init_params(t.model, t.config.seed);
    const float residual_std =
        t.config.model.init_std / std::sqrt(2.0f * static_cast<float>(t.config.model.num_layers));
    for (auto& block : t.moe) block->init_params(t.config.seed, t.config.model.init_std, residual_std);
}

namespace {

// The MoE layers' losses and counts of the last forward (global: the same on every rank).
void add_moe_stats(const Trainer& t, StepResult* r) {
    const int64_t E = t.config.moe.layer.num_experts;
    for (const auto& block : t.moe) {
        const MoeLayer& layer = block->layer();
        r->aux_loss += layer.stats().aux_loss;
        r->z_loss += layer.stats().z_loss;
        const DispatchLayout& h = layer.layout();
        for (int64_t i = 0; i < layer.num_ranks() * E; ++i) {
            r->requested += h.requested[i];
            r->dropped += h.requested[i] - h.allowed[i];
        }
        for (int p = 0; p < kNumPhases; ++p) r->moe_phase_s[p] += layer.stats().phase_s[p];
    }
}

}  // namespace

void trainer_compute_grads(
    Trainer& t, int64_t step, const int32_t* inputs, const int32_t* targets, StepResult* result) {
    const int P = t.comm.size();
    *result = StepResult{};
    double t0 = now_s();
    for (auto& block : t.moe) block->set_step(step);
    gpt_zero_grads(t.model);
    const float local_loss = gpt_forward(t.model, inputs, targets, nullptr);
    // The loss is the mean over all P·B·S targets = (1/P)·Σ_r (mean over rank r's): each rank's loss
    // gradient carries 1/P and the all-reduce sums. The MoE layers' aux and z gradients are already of the
    // global losses (their sums run over all ranks' tokens), so they are added unscaled by their backward.
    const float inv_P = 1.0f / static_cast<float>(P);
    for (int64_t n = 0; n < t.model.num_rows; ++n) t.model.acts.dlosses[n] *= inv_P;
    double t1 = now_s();
    gpt_backward(t.model);
    double t2 = now_s();
    // Bucketed all-reduce over the replicated gradients' contiguous runs: a few MB per MPI call.
    const int64_t bucket =
        std::max<int64_t>(1, t.config.allreduce_bucket_bytes / static_cast<int64_t>(sizeof(float)));
    for (const GradRegion& region : t.allreduce_regions)
        for (int64_t offset = 0; offset < region.count; offset += bucket)
            t.comm.allreduce_sum_f32(region.data + offset, std::min(bucket, region.count - offset));
    double t3 = now_s();

    // Per-rank scalars gathered once: the LM loss and the expert shards' Σg² (for the global norm).
    double expert_sumsq = 0;
    for (const ExpertTensor& e : t.experts)
        expert_sumsq += sum_of_squares(e.grad, e.num_local * e.item_count);
    const double mine[2] = {static_cast<double>(local_loss), expert_sumsq};
    t.comm.allgather_f64(mine, t.gathered.data(), 2);
    for (int r = 0; r < P; ++r) result->loss += t.gathered[2 * r];  // rank order: the same bits everywhere
    result->loss /= P;
    add_moe_stats(t, result);
    const LayerConfig& c = t.config.moe.layer;
    result->total_loss = result->loss + c.aux_loss_coef * result->aux_loss + c.z_loss_coef * result->z_loss;
    result->phase_s[kTrainForward] = t1 - t0;
    result->phase_s[kTrainBackward] = t2 - t1;
    result->phase_s[kTrainAllreduce] = t3 - t2;
}

void trainer_update(Trainer& t, int64_t step, StepResult* result) {
    const int P = t.comm.size();
    double t0 = now_s();
    // Global norm: replicated gradients once (identical on every rank after the all-reduce), expert
    // shards summed over ranks (gathered by trainer_compute_grads).
    double sumsq = 0;
    for (const ParamTensor& p : t.replicated) sumsq += sum_of_squares(p.grad, p.count);
    for (int r = 0; r < P; ++r) sumsq += t.gathered[2 * r + 1];
    result->grad_norm = std::sqrt(sumsq);
    if (t.config.grad_clip > 0) {
        const float factor = clip_factor(result->grad_norm, t.config.grad_clip);
        if (factor < 1.0f) {
            for (const ParamTensor& p : t.replicated) scale(p.grad, p.count, factor);
            for (const ExpertTensor& e : t.experts) scale(e.grad, e.num_local * e.item_count, factor);
        }
    }
    const TrainConfig& c = t.config;
    result->learning_rate = lr_at_step(step, c.learning_rate, c.warmup_steps, c.steps, c.min_lr_ratio);
    t.optimizer->step(result->learning_rate);
    result->phase_s[kTrainOptimizer] = now_s() - t0;
    double times[kNumTrainPhases + kNumPhases];
    std::copy(result->phase_s, result->phase_s + kNumTrainPhases, times);
    std::copy(result->moe_phase_s, result->moe_phase_s + kNumPhases, times + kNumTrainPhases);
    t.comm.allreduce_max_f64(times, kNumTrainPhases + kNumPhases);
    std::copy(times, times + kNumTrainPhases, result->phase_s);
    std::copy(times + kNumTrainPhases, times + kNumTrainPhases + kNumPhases, result->moe_phase_s);
}

StepResult trainer_step(Trainer& t, int64_t step, const int32_t* inputs, const int32_t* targets) {
    StepResult result;
    trainer_compute_grads(t, step, inputs, targets, &result);
    trainer_update(t, step, &result);
    return result;
}

// ------------------------------------------------------------------------------------------------
// Evaluation

EvalResult trainer_evaluate(Trainer& t, TokenData& data, Split split, int64_t max_windows, bool count_tags) {
    const int P = t.comm.size();
    const int64_t N = t.model.num_rows, E = t.config.moe.layer.num_experts, k = t.config.moe.layer.top_k;
    const int64_t M = static_cast<int64_t>(t.moe.size());
    const int64_t num_tags = count_tags ? static_cast<int64_t>(data.tag_names().size()) : 0;
    EvalResult result;
    result.split = split;
    std::vector<double> tag_counts(M * E * num_tags, 0.0);
    // Evaluation must not move training state: the router-bias update runs inside the layer's forward.
    for (size_t m = 0; m < t.moe.size(); ++m) {
        std::copy(t.moe[m]->layer().selection_bias(), t.moe[m]->layer().selection_bias() + E,
                  t.bias_state.begin() + m * E);
        t.moe[m]->layer().set_capacity_factor(t.config.eval_capacity_factor);
    }
    const EvalPlan plan = data.eval_plan(split, max_windows);
    double loss_sum = 0;
    for (int64_t step = 0; step < plan.num_steps; ++step) {
        const int64_t num_targets = data.eval_batch(plan, step, t.eval_inputs.data(), t.eval_targets.data(),
                                                    count_tags ? t.eval_tags.data() : nullptr);
        for (int64_t n = 0; n < N; ++n) {
            t.eval_weights[n] = t.eval_targets[n] >= 0 ? 1.0f : 0.0f;
            if (t.eval_targets[n] < 0) t.eval_targets[n] = 0;  // weight 0: any id in range does
        }
        for (auto& block : t.moe) block->set_step(step);
        // A rank whose batch is all padding still runs the forward (the MoE layers are collective).
        gpt_forward(t.model, t.eval_inputs.data(), num_targets > 0 ? t.eval_targets.data() : nullptr,
                    num_targets > 0 ? t.eval_weights.data() : nullptr);
        t.model.backward_ready = false;
        for (int64_t n = 0; n < N && num_targets > 0; ++n)
            if (t.eval_weights[n] > 0) loss_sum += t.model.acts.losses[n];
        result.num_targets += num_targets;
        StepResult counts;
        add_moe_stats(t, &counts);
        result.requested += counts.requested;
        result.dropped += counts.dropped;
        for (int64_t m = 0; m < M && count_tags; ++m) {
            const GateState& g = t.moe[m]->layer().gate_state();
            for (int64_t s = 0; s < N * k; ++s) {
                const int32_t tag = t.eval_tags[s / k];
                if (tag >= 0 && g.routed[s]) tag_counts[(m * E + g.expert[s]) * num_tags + tag] += 1;
            }
        }
    }
    for (size_t m = 0; m < t.moe.size(); ++m) {
        t.moe[m]->layer().set_capacity_factor(t.config.moe.layer.capacity_factor);
        t.moe[m]->layer().set_selection_bias(t.bias_state.data() + m * E);
    }
    // Sums over ranks in rank order. requested/dropped are global already (every rank sees the count matrix).
    const double mine[2] = {loss_sum, static_cast<double>(result.num_targets)};
    t.comm.allgather_f64(mine, t.gathered.data(), 2);
    loss_sum = 0;
    result.num_targets = 0;
    for (int r = 0; r < P; ++r) {
        loss_sum += t.gathered[2 * r];
        result.num_targets += static_cast<int64_t>(t.gathered[2 * r + 1]);
    }
    result.loss = result.num_targets > 0 ? loss_sum / static_cast<double>(result.num_targets) : 0.0;
    result.perplexity = std::exp(result.loss);
    if (count_tags) {
        std::vector<double> all(t.comm.rank() == 0 ? P * tag_counts.size() : 0);
        t.comm.gather_f64(tag_counts.data(), all.data(), static_cast<int64_t>(tag_counts.size()), 0);
        if (t.comm.rank() == 0) {
            result.tag_counts.assign(tag_counts.size(), 0);
            for (int r = 0; r < P; ++r)
                for (size_t i = 0; i < tag_counts.size(); ++i)
                    result.tag_counts[i] += static_cast<int64_t>(all[r * tag_counts.size() + i]);
        }
    }
    return result;
}

// ------------------------------------------------------------------------------------------------
// Checkpoint state

TrainingState training_state(Trainer& t, const DataPosition& position) {
    TrainingState state;
    AdamW& opt = *t.optimizer;
    float* m = opt.moments().data();
    float* v = m + opt.num_floats();
    int64_t offset = 0;
    for (const ParamTensor& p : t.replicated) {
        state.tensors.push_back(StateTensor{"/params/" + p.name, p.shape, p.param});
        state.tensors.push_back(StateTensor{"/adam_m/" + p.name, p.shape, m + offset});
        state.tensors.push_back(StateTensor{"/adam_v/" + p.name, p.shape, v + offset});
        offset += p.count;
    }
    for (size_t i = 0; i < t.experts.size(); ++i) {
        const ExpertTensor& e = t.experts[i];
        const int64_t o = t.expert_moment_offset[i];
        for (const auto& [prefix, data] :
             {std::pair<std::string, float*>{"/params/", e.param}, {"/adam_m/", m + o}, {"/adam_v/", v + o}})
            state.tensors.push_back(
                StateTensor{prefix + e.name, e.item_shape, data, e.num_global, e.first_expert, e.num_local});
    }
    const int64_t E = t.config.moe.layer.num_experts;
    for (size_t b = 0; b < t.moe.size(); ++b) {
        const float* bias = t.moe[b]->layer().selection_bias();
        std::copy(bias, bias + E, t.bias_state.begin() + b * E);
        state.tensors.push_back(StateTensor{
            "/router_bias/h" + std::to_string(t.moe[b]->block()), {E}, t.bias_state.data() + b * E});
    }
    int64_t packed[DataPosition::kNumInt64];
    position.pack(packed);
    state.counters = {{"step", position.next_step},
                      {"adamw_step", opt.num_steps()},
                      {"seed", static_cast<int64_t>(t.config.seed)}};
    for (int i = 0; i < DataPosition::kNumInt64; ++i)
        state.counters.emplace_back("data_position_" + std::to_string(i), packed[i]);
    state.non_negative_counters = {"step", "adamw_step"};
    const ModelConfig& mc = t.config.model;
    const LayerConfig& lc = t.config.moe.layer;
    // The vocabulary first: a resume on other data then fails with a message that says so.
    std::ostringstream vocabulary;
    vocabulary << mc.vocab_size << " tokens, fingerprint " << std::hex << position.vocab_fingerprint;
    state.shape_attributes = {{"vocabulary", vocabulary.str()},
                              {"seq_len", std::to_string(mc.seq_len)},
                              {"d_model", std::to_string(mc.d_model)},
                              {"num_heads", std::to_string(mc.num_heads)},
                              {"num_layers", std::to_string(mc.num_layers)},
                              {"d_ff_dense", std::to_string(mc.d_ff_dense)},
                              {"moe_every", std::to_string(mc.moe_every)}};
    if (!t.moe.empty()) {
        state.shape_attributes.insert(state.shape_attributes.end(),
                                      {{"experts", std::to_string(lc.num_experts)},
                                       {"d_ff", std::to_string(lc.d_ff)},
                                       {"activation", to_string(lc.activation)},
                                       {"expert_bias", lc.expert_bias ? "true" : "false"},
                                       {"noisy_router", lc.gate == GateKind::noisy_topk ? "true" : "false"},
                                       {"shared_experts", std::to_string(t.config.moe.shared_experts)},
                                       {"dense_branch_ff", std::to_string(t.config.moe.dense_branch_ff)}});
    }
    return state;
}

DataPosition apply_training_state(Trainer& t, const TrainingState& state) {
    auto counter = [&](const std::string& name) -> int64_t {
        for (const auto& [key, value] : state.counters)
            if (key == name) return value;
        EXPAR_FAIL("checkpoint state has no counter '" << name << "'");
    };
    const int64_t E = t.config.moe.layer.num_experts;
    for (size_t b = 0; b < t.moe.size(); ++b)
        t.moe[b]->layer().set_selection_bias(t.bias_state.data() + b * E);
    t.optimizer->set_num_steps(counter("adamw_step"));
    int64_t packed[DataPosition::kNumInt64];
    for (int i = 0; i < DataPosition::kNumInt64; ++i)
        packed[i] = counter("data_position_" + std::to_string(i));
    DataPosition position = DataPosition::unpack(packed);
    position.next_step = counter("step");
    return position;
}

}  // namespace expar
