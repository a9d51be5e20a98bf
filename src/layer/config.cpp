#include "config.h"

#include <cmath>

#include "check.h"

namespace expar {

void validate(const LayerConfig& c, int num_ranks) {
    EXPAR_REQUIRE(num_ranks > 0, "number of ranks must be positive");
    EXPAR_REQUIRE(c.num_experts > 0, "--experts must be positive (got " << c.num_experts << ")");
    EXPAR_REQUIRE(c.num_experts % num_ranks == 0, "--experts " << c.num_experts << " is not divisible by the "
                                                               << num_ranks << " ranks (experts are sharded "
                                                               << "disjointly: E % P must be 0)");
    EXPAR_REQUIRE(c.top_k > 0, "--top-k must be positive (got " << c.top_k << ")");
    EXPAR_REQUIRE(c.top_k <= c.num_experts, "--top-k " << c.top_k << " exceeds --experts " << c.num_experts);
    EXPAR_REQUIRE(c.gate != GateKind::switch_top1 || c.top_k == 1, "--gate switch is top-1: use --top-k 1");
    EXPAR_REQUIRE(c.gate != GateKind::gshard || c.top_k == 2, "--gate gshard is top-2: use --top-k 2");
    EXPAR_REQUIRE(c.d_model > 0, "--d-model must be positive (got " << c.d_model << ")");
    EXPAR_REQUIRE(c.d_ff > 0, "--d-ff must be positive (got " << c.d_ff << ")");
    EXPAR_REQUIRE(c.tokens_per_rank > 0,
                  "--tokens-per-rank must be positive (got " << c.tokens_per_rank << ")");
    EXPAR_REQUIRE(std::isfinite(c.capacity_factor) && c.capacity_factor >= 0,
                  "--capacity-factor must be >= 0 (0 = dropless), got " << c.capacity_factor);
    EXPAR_REQUIRE(std::isfinite(c.aux_loss_coef) && c.aux_loss_coef >= 0, "--aux-loss-coef must be >= 0");
    EXPAR_REQUIRE(std::isfinite(c.z_loss_coef) && c.z_loss_coef >= 0, "--z-loss-coef must be >= 0");
    EXPAR_REQUIRE(std::isfinite(c.skew) && c.skew >= 0, "--skew must be >= 0 (got " << c.skew << ")");
    EXPAR_REQUIRE(c.group_size >= 0, "--group-size must be >= 0 (0 = automatic), got " << c.group_size);
    const int g = effective_group_size(c, num_ranks);
    EXPAR_REQUIRE(c.schedule != ScheduleKind::pairwise || num_ranks % g == 0,
                  "--group-size " << g << " does not divide the " << num_ranks << " ranks");
    EXPAR_REQUIRE(c.node_limit >= 0, "--node-limit must be >= 0 (0 = off), got " << c.node_limit);
    EXPAR_REQUIRE(
        c.node_limit == 0 || c.gate_topology == GateTopology::none,
        "--node-limit and --gate-topology fastermoe cannot be combined (both restrict off-node routing)");
    EXPAR_REQUIRE(std::isfinite(c.router_bias_rate) && c.router_bias_rate >= 0,
                  "--router-bias must be >= 0 (0 = off), got " << c.router_bias_rate);
    EXPAR_REQUIRE(!c.shadow || c.shadow_max_experts > 0,
                  "--shadow-max-experts must be positive (got " << c.shadow_max_experts << ")");
}

}  // namespace expar
