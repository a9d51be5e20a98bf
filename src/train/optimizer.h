// AdamW (decoupled weight decay, Loshchilov & Hutter 2019) over named parameter tensors, its state
// (first and second moments) in one allocation; the learning-rate schedule (linear warmup, cosine
// decay); and gradient-norm clipping split into pieces so the global norm can be summed across ranks.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace expar {

struct AdamWConfig {
    float beta1 = 0.9f;
    float beta2 = 0.95f;  // GPT-2/GPT-3 and llm.c's choice for language models
    float eps = 1e-8f;
    float weight_decay = 0.1f;
};

// Weight decay applies to tensors of rank >= 2 (the matmul weights, the token and position embeddings,
// experts' matrices) and not to biases and LayerNorm weights: GPT-2's configure_optimizers and llm.c's
// train_gpt2.cu rule. The embeddings are decayed on purpose: wte is also the LM head and wpe takes part
// in every forward (llm.c's comment).
bool adamw_decays(const ParamTensor& tensor);

// One AdamW step over count contiguous values; t is the 1-based step count (bias correction):
//   m = β1·m + (1−β1)·g,   v = β2·v + (1−β2)·g²,   m̂ = m/(1−β1^t),   v̂ = v/(1−β2^t),
//   param −= lr·(m̂/(sqrt(v̂) + eps) + weight_decay·param).
// The decay is scaled by lr, as in PyTorch's AdamW and llm.c.
void adamw_update(float* param,
                  const float* grad,
                  float* m,
                  float* v,
                  int64_t count,
                  float learning_rate,
                  float weight_decay,
                  const AdamWConfig& config,
                  int64_t t);

class AdamW {
   public:
    // Moments for every tensor of the list, zero, in one allocation: m of all tensors, then v of all.
    AdamW(const std::vector<ParamTensor>& tensors, const AdamWConfig& config);

    // One update of every tensor from its current gradient.
    void step(float learning_rate);

    int64_t num_steps() const { return num_steps_; }
    // For checkpoints: the [2, num_floats] moments (m then v, tensors in list order) and the step count.
    std::vector<float>& moments() { return moments_; }
    int64_t num_floats() const { return num_floats_; }
    void set_num_steps(int64_t steps) { num_steps_ = steps; }

   private:
    std::vector<ParamTensor> tensors_;
    std::vector<int64_t> state_offset_;  // [tensors] offset of each tensor's m (and of v, + num_floats_)
    AdamWConfig config_;
    std::vector<float> moments_;
    int64_t num_floats_ = 0;
    int64_t num_steps_ = 0;
};

// The learning rate at 0-based `step` (llm.c's schedule): linear warmup base·(step+1)/warmup over
// the first warmup_steps steps, then cosine decay from base to base·min_lr_ratio at total_steps, and
// base·min_lr_ratio after. With warmup_steps = 0 the decay starts at step 0 at base.
float lr_at_step(int64_t step, float base_lr, int64_t warmup_steps, int64_t total_steps, float min_lr_ratio);

// Gradient clipping in pieces: each rank sums the squares of what it holds (replicated tensors once,
// sharded ones all), the caller sums over ranks, takes the sqrt, and scales by clip_factor.
double sum_of_squares(const float* grads, int64_t n);  // Σ g², accumulated in double
void scale(float* grads, int64_t n, float factor);     // grads *= factor
// min(1, max_norm / global_norm): the factor that brings the global norm down to max_norm.
float clip_factor(double global_norm, double max_norm);

}  // namespace expar
