#include "optimizer.h"

#include <cmath>

#include "check.h"

namespace expar {

bool adamw_decays(const ParamTensor& tensor) {
    return tensor.shape.size() >= 2;
}

void adamw_update(float* param,
                  const float* grad,
                  float* m,
                  float* v,
                  int64_t count,
                  float learning_rate,
                  float weight_decay,
                  const AdamWConfig& config,
                  int64_t t) {
    const float beta1 = config.beta1, beta2 = config.beta2;
    // Bias corrections in double: β2^t with β2 = 0.95 and t ~ 1e5 underflows gracefully to 0, and
    // 1 − β^t keeps its digits for small t.
    const float correction1 =
        static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
    const float correction2 =
        static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
    for (int64_t i = 0; i < count; ++i) {
        const float g = grad[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        const float m_hat = m[i] / correction1;
        const float v_hat = v[i] / correction2;
        param[i] -= learning_rate * (m_hat / (std::sqrt(v_hat) + config.eps) + weight_decay * param[i]);
    }
}

AdamW::AdamW(const std::vector<ParamTensor>& tensors, const AdamWConfig& config)
    : tensors_(tensors), config_(config) {
    for (const ParamTensor& t : tensors_) {
        EXPAR_ASSERT(t.param != nullptr && t.grad != nullptr);
        state_offset_.push_back(num_floats_);
        num_floats_ += t.count;
    }
    moments_.assign(2 * num_floats_, 0.0f);
}

void AdamW::step(float learning_rate) {
    ++num_steps_;
    for (size_t i = 0; i < tensors_.size(); ++i) {
        const ParamTensor& t = tensors_[i];
        float* m = moments_.data() + state_offset_[i];
        float* v = m + num_floats_;
        adamw_update(t.param, t.grad, m, v, t.count, learning_rate,
                     adamw_decays(t) ? config_.weight_decay : 0.0f, config_, num_steps_);
    }
}

float lr_at_step(int64_t step, float base_lr, int64_t warmup_steps, int64_t total_steps, float min_lr_ratio) {
    if (step < warmup_steps) return base_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    const float min_lr = base_lr * min_lr_ratio;
    if (step >= total_steps) return min_lr;
    const double decay_ratio =
        static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    const double coeff = 0.5 * (1.0 + std::cos(M_PI * decay_ratio));  // 1 → 0
    return min_lr + static_cast<float>(coeff) * (base_lr - min_lr);
}

double sum_of_squares(const float* grads, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(grads[i]) * grads[i];
    return sum;
}

void scale(float* grads, int64_t n, float factor) {
    for (int64_t i = 0; i < n; ++i) grads[i] *= factor;
}

float clip_factor(double global_norm, double max_norm) {
    // The 1e-6 keeps a zero norm finite (factor 1), as PyTorch's clip_grad_norm_ does.
    return global_norm > max_norm ? static_cast<float>(max_norm / (global_norm + 1e-6)) : 1.0f;
}

}  // namespace expar
