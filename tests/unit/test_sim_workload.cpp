// Simulator workloads: every preset loads and is valid, FLOPs per token match hand-computed values, the
// preset fills only the options the command line left at their defaults, and bad input is one clear line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "check.h"
#include "enum_option.h"
#include "presets.h"
#include "workload.h"

namespace po = boost::program_options;
using testing::HasSubstr;

namespace expar {
namespace {

template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const Error& error) {
        EXPECT_TRUE(error.all_ranks());
        return error.what();
    }
    return "";
}

TEST(SimWorkload, EveryPresetIsValid) {
    const std::vector<std::string> names = preset_names();
    EXPECT_EQ(names.size(), 13u);
    for (const std::string& name : names) {
        Workload w;
        w.model = model_preset(name);
        w.tokens_per_rank = 1024;
        EXPECT_NO_THROW(validate(w)) << name;
        EXPECT_EQ(w.model.name, name);
    }
}

// Hand-computed from models.md: 2 FLOPs per multiply-add, d·f per matrix, router 2·d·E.
TEST(SimWorkload, FlopsPerTokenMatchHandComputedValues) {
    const ModelSpec mixtral = model_preset("mixtral-8x7b");  // d 4096, f 14336, SwiGLU (3), E 8, k 2
    EXPECT_DOUBLE_EQ(expert_forward_flops_per_token(mixtral), 352321536.0);     // 2·3·4096·14336
    EXPECT_DOUBLE_EQ(moe_layer_forward_flops_per_token(mixtral), 704708608.0);  // + 2·4096·8 router
    const ModelSpec v3 = model_preset("deepseek-v3");  // d 7168, f 2048, E 256, k 8, 1 shared of 2048
    EXPECT_DOUBLE_EQ(expert_forward_flops_per_token(v3), 88080384.0);      // 2·3·7168·2048
    EXPECT_DOUBLE_EQ(moe_layer_forward_flops_per_token(v3), 796393472.0);  // 9 experts + 2·7168·256
    const ModelSpec sw = model_preset("switch-base-8");                  // d 768, f 3072, ReLU (2), E 8, k 1
    EXPECT_DOUBLE_EQ(moe_layer_forward_flops_per_token(sw), 9449472.0);  // 2·2·768·3072 + 2·768·8
    const ModelSpec qwen = model_preset("qwen2-57b-a14b");  // 8 × 2·3·3584·2560 + 2·3·3584·20480 + router
    EXPECT_DOUBLE_EQ(moe_layer_forward_flops_per_token(qwen), 881262592.0);
    EXPECT_EQ(expert_num_params(mixtral), 3 * 4096 * 14336);
    Workload w{mixtral, 4096, 2};
    EXPECT_DOUBLE_EQ(token_bytes(w), 8192.0);
}

struct Parsed {
    LayerConfig layer;
    WorkloadOptions options;
    po::variables_map vm;
};

// The layer options the simulator shares with `expar layer`, plus the workload's.
void parse(Parsed* p, std::vector<std::string> args) {
    po::options_description d;
    d.add_options()("experts", po::value<int64_t>(&p->layer.num_experts)->default_value(8))(
        "top-k", po::value<int>(&p->layer.top_k)->default_value(2))(
        "d-model", po::value<int64_t>(&p->layer.d_model)->default_value(512))(
        "d-ff", po::value<int64_t>(&p->layer.d_ff)->default_value(2048))("activation",
                                                                         enum_value(&p->layer.activation))(
        "tokens-per-rank", po::value<int64_t>(&p->layer.tokens_per_rank)->default_value(4096));
    d.add(workload_options_description(&p->options));
    std::vector<const char*> argv = {"x"};
    for (const std::string& a : args) argv.push_back(a.c_str());
    po::store(po::parse_command_line(static_cast<int>(argv.size()), argv.data(), d), p->vm);
    po::notify(p->vm);
}

TEST(SimWorkload, PresetFillsOnlyWhatTheCommandLineLeftAtItsDefault) {
    Parsed p;
    parse(&p, {"--model", "deepseek-v3", "--experts", "64", "--moe-layers", "2"});
    const Workload w = make_workload(p.options, p.vm, &p.layer);
    EXPECT_EQ(p.layer.num_experts, 64);  // given: wins over the preset's 256
    EXPECT_EQ(p.layer.top_k, 8);         // from the preset
    EXPECT_EQ(p.layer.d_model, 7168);
    EXPECT_EQ(p.layer.activation, Activation::swiglu);
    EXPECT_EQ(w.model.num_experts, 64);
    EXPECT_EQ(w.model.num_shared_experts, 1);
    EXPECT_EQ(w.model.num_moe_layers, 2);
    EXPECT_EQ(w.model.num_dense_layers, 3);
    EXPECT_EQ(w.tokens_per_rank, 4096);

    Parsed custom;
    parse(&custom, {"--d-model", "64", "--shared-experts", "1", "--shared-d-ff", "128"});
    const Workload c = make_workload(custom.options, custom.vm, &custom.layer);
    EXPECT_EQ(c.model.name, "custom");
    EXPECT_EQ(c.model.d_model, 64);
    EXPECT_EQ(c.model.num_shared_experts, 1);
    EXPECT_EQ(c.model.activation_name, "gelu");
}

TEST(SimWorkload, BadInputIsOneClearLine) {
    EXPECT_THAT(error_of([] { model_preset("mixtral-9x7b"); }),
                HasSubstr("unknown --model 'mixtral-9x7b' (known: switch-base-8, switch-c-2048,"));
    Parsed p;
    parse(&p, {"--shared-experts", "2"});
    EXPECT_THAT(error_of([&] { make_workload(p.options, p.vm, &p.layer); }),
                HasSubstr("--shared-experts 2 needs --shared-d-ff > 0"));
    Parsed q;
    parse(&q, {"--dtype-bytes", "3"});
    EXPECT_THAT(error_of([&] { make_workload(q.options, q.vm, &q.layer); }),
                HasSubstr("--dtype-bytes must be 1, 2, 4 or 8 (got 3)"));
}

}  // namespace
}  // namespace expar
