// Expert-parallel training of the MoE language model: the GptModel with one MoeFfn per MoE block,
// AdamW over every parameter (experts as this rank's shards), the data-parallel all-reduce of the
// replicated gradients (bucketed over their flat memory), global-norm clipping across ranks, the
// learning-rate schedule, evaluation with its own capacity factor, and the checkpointable state.
// Owns every buffer a step needs: trainer_step allocates nothing. Math: docs/train.md.
//
// Dimensions: P ranks, B sequences per rank, S sequence length, N = B·S rows per rank, E experts,
// k top-k, M MoE blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "comm.h"
#include "data.h"
#include "model.h"
#include "moe_ffn.h"
#include "moe_layer.h"
#include "optimizer.h"

namespace expar {

struct TrainConfig {
    ModelConfig model;
    MoeFfnConfig moe;        // layer.d_model and layer.tokens_per_rank are set by finalize()
    int64_t batch_size = 8;  // B sequences per rank
    int64_t steps = 1000;    // total optimizer steps (the cosine decay ends there)
    float learning_rate = 1e-3f;
    int64_t warmup_steps = 50;
    float min_lr_ratio = 0.1f;
    AdamWConfig adamw;
    double grad_clip = 1.0;             // max global gradient norm; 0 = no clipping
    double eval_capacity_factor = 2.0;  // the MoE layers' capacity factor while evaluating (Switch: 2.0)
    int64_t allreduce_bucket_bytes = 4 << 20;
    uint64_t seed = 1;  // parameters and gate randomness (the data has its own, TokenData's)
};

// Sets moe.layer.d_model = d_model and tokens_per_rank = B·S, then validates everything (all-ranks
// errors naming the option).
void finalize(TrainConfig& config, int num_ranks);

enum TrainPhase { kTrainForward, kTrainBackward, kTrainAllreduce, kTrainOptimizer, kNumTrainPhases };
inline const auto& enum_names(TrainPhase) {
    static constexpr EnumName<TrainPhase> names[] = {{kTrainForward, "forward"},
                                                     {kTrainBackward, "backward"},
                                                     {kTrainAllreduce, "allreduce"},
                                                     {kTrainOptimizer, "optimizer"}};
    return names;
}

struct StepResult {
    double loss = 0;        // LM cross-entropy, mean over all P·B·S targets [nats]
    double aux_loss = 0;    // load-balancing loss summed over MoE blocks, without its coefficient
    double z_loss = 0;      // router z-loss summed over MoE blocks, without its coefficient
    double total_loss = 0;  // loss + aux_loss_coef·aux_loss + z_loss_coef·z_loss: what the gradients are of
    double grad_norm = 0;   // global L2 norm before clipping (replicated once, expert shards of all ranks)
    float learning_rate = 0;
    double phase_s[kNumTrainPhases] = {};  // this step's wall time per phase, max over ranks [s]
    double moe_phase_s[kNumPhases] = {};   // MoE layer phases summed over blocks, max over ranks [s]
    int64_t requested = 0, dropped = 0;    // routed / dropped assignments, all blocks and ranks
};

struct EvalResult {
    Split split = Split::valid;
    int64_t num_targets = 0;             // tokens scored, all ranks
    double loss = 0;                     // mean cross-entropy over them [nats]
    double perplexity = 0;               // exp(loss)
    int64_t requested = 0, dropped = 0;  // assignments over all blocks, ranks and batches
    std::vector<int64_t> tag_counts;     // rank 0, when asked: [M, E, tags] routed assignments by input tag
};

struct Trainer {
    // cluster: node map and rates for the MoE layers (null: one node).
    Trainer(const TrainConfig& config, Comm& comm, const LayerCluster* cluster);
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    TrainConfig config;
    Comm& comm;
    GptModel model;
    BlasExpertCompute expert_compute;
    std::vector<std::unique_ptr<MoeFfn>> moe;   // [M] in block order
    std::vector<ParamTensor> replicated;        // the model's tensors, then each block's router/branches
    std::vector<ExpertTensor> experts;          // this rank's expert shards, every block
    std::vector<GradRegion> allreduce_regions;  // replicated gradients as contiguous runs
    std::unique_ptr<AdamW> optimizer;           // over replicated, then each expert tensor's local items
    std::vector<int64_t> expert_moment_offset;  // [experts] offset of each expert tensor's m in the moments
    // Step scratch, sized once.
    std::vector<double> gathered;   // [P · 2] per-rank (LM loss, expert Σg²)
    std::vector<float> bias_state;  // [M, E] router-bias copies for training_state
    std::vector<int32_t> eval_inputs, eval_targets, eval_tags;  // [N]
    std::vector<float> eval_weights;                            // [N]
};

// The parameters: GPT-2 init of the model, MoeFfn::init_params of each block (from config.seed).
void trainer_init_params(Trainer& trainer);

// One step's gradients: zero, forward, backward, all-reduce of the replicated gradients. inputs and
// targets are this rank's [B, S] of the step's global batch. Fills loss, aux, z, requested, dropped and
// the forward/backward/allreduce times of result.
void trainer_compute_grads(
    Trainer& trainer, int64_t step, const int32_t* inputs, const int32_t* targets, StepResult* result);
// Clipping by the global norm, then AdamW at lr_at_step(step). Fills grad_norm, learning_rate and the
// optimizer time of result, and reduces the phase times to their max over ranks.
void trainer_update(Trainer& trainer, int64_t step, StepResult* result);
// Both: one training step.
StepResult trainer_step(Trainer& trainer, int64_t step, const int32_t* inputs, const int32_t* targets);

// Collective. Mean loss over a split (max_windows > 0 caps the windows), with the MoE layers at
// eval_capacity_factor; restores training's factor and router-bias state after. count_tags (data with
// tags) fills tag_counts on rank 0.
EvalResult trainer_evaluate(
    Trainer& trainer, TokenData& data, Split split, int64_t max_windows, bool count_tags);

// The checkpointable state (checkpoint.h): every parameter, AdamW's m and v (experts as sharded
// tensors under their global index), each MoE block's router-bias state, and the counters step (the next
// step), adamw_step, seed and data_position_0..3 (DataPosition::pack). Views into the trainer, valid
// until the next step; shape attributes name everything that must match to load.
TrainingState training_state(Trainer& trainer, const DataPosition& position);
// After load_checkpoint filled a state from training_state: pushes the router-bias state into the layers
// and AdamW's step count, and returns the position to resume from (next_step, seed, vocabulary).
DataPosition apply_training_state(Trainer& trainer, const TrainingState& state);

}  // namespace expar
