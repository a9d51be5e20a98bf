#include "options.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "check.h"
#include "text_file.h"

namespace po = boost::program_options;

namespace expar {

po::options_description layer_decision_options_description(LayerConfig* c, LayerOptionText* text) {
    po::options_description layer("MoE layer");
    layer.add_options()("experts", po::value<int64_t>(&c->num_experts)->default_value(c->num_experts),
                        "number of experts E (global; E % ranks == 0)")(
        "top-k", po::value<int>(&c->top_k)->default_value(c->top_k), "experts per token k")(
        "gate", po::value<std::string>(&text->gate)->default_value(text->gate),
        "topk | switch (top-1) | gshard (top-2, random 2nd) | noisy-topk")(
        "capacity-factor", po::value<double>(&c->capacity_factor)->default_value(c->capacity_factor),
        "capacity factor cf [1]; capacity = ceil(cf*tokens*k/E) tokens per expert; 0 = dropless")(
        "capacity-scope", po::value<std::string>(&text->scope)->default_value(text->scope),
        "local (tokens of one source rank) | global (all tokens of the step)")(
        "drop-policy", po::value<std::string>(&text->policy)->default_value(text->policy),
        "position (later tokens dropped first) | probs (lowest gate weight dropped first)")(
        "d-model", po::value<int64_t>(&c->d_model)->default_value(c->d_model), "model width d [elements]")(
        "d-ff", po::value<int64_t>(&c->d_ff)->default_value(c->d_ff), "expert hidden width f [elements]")(
        "activation", po::value<std::string>(&text->activation)->default_value(text->activation),
        "gelu | relu | silu | swiglu")(
        "tokens-per-rank", po::value<int64_t>(&c->tokens_per_rank)->default_value(c->tokens_per_rank),
        "tokens per rank per step [tokens]")(
        "skew", po::value<double>(&c->skew)->default_value(c->skew),
        "routing skew: Zipf exponent s of a fixed router bias -s*ln(e+1) [1]; 0 = none");
    po::options_description fastermoe("Schedules, topology-aware routing, shadowing (docs/layer.md)");
    fastermoe.add_options()(
        "schedule", po::value<std::string>(&text->schedule)->default_value(text->schedule),
        "token exchange: plain (one MPI_Alltoallv) | pairwise (FasterMoE, overlapped with "
        "expert compute) | hierarchical (2D: intra-node, then inter-node)")(
        "group-size", po::value<int>(&c->group_size)->default_value(c->group_size),
        "pairwise: ranks per group [ranks]; clipped to the rank count, then must divide it")(
        "gate-topology", po::value<std::string>(&text->gate_topology)->default_value(text->gate_topology),
        "none | fastermoe: at most L = W_net/(M*W_local)*T*k assignments per rank leave the node; the "
        "lowest-scoring others move to on-node experts (needs --topology)")(
        "node-limit", po::value<int>(&c->node_limit)->default_value(c->node_limit),
        "DeepSeek-V3 node-limited routing: a token's experts lie on at most M nodes [nodes]; 0 = off")(
        "router-bias", po::value<double>(&c->router_bias_rate)->default_value(c->router_bias_rate),
        "DeepSeek-V3 auxiliary-loss-free balancing: per-expert selection bias moved by +-GAMMA each step "
        "[1]; 0 = off")("shadow", po::value<bool>(&c->shadow)->default_value(c->shadow),
                        "FasterMoE dynamic shadowing of hot experts (true|false; needs --topology)")(
        "shadow-max-experts", po::value<int>(&c->shadow_max_experts)->default_value(c->shadow_max_experts),
        "most experts shadowed in one step (buffers for their weights are kept) [experts]");
    po::options_description all;
    all.add(layer).add(fastermoe);
    return all;
}

void apply_layer_option_text(const LayerOptionText& text, const po::variables_map& vm, LayerConfig* c) {
    c->gate = parse_gate(text.gate);
    c->activation = parse_activation(text.activation);
    c->capacity_scope = parse_capacity_scope(text.scope);
    c->drop_policy = parse_drop_policy(text.policy);
    c->schedule = parse_schedule(text.schedule);
    c->gate_topology = parse_gate_topology(text.gate_topology);
    const auto top_k = vm.find("top-k");
    if (c->gate == GateKind::switch_top1 && (top_k == vm.end() || top_k->second.defaulted())) c->top_k = 1;
}

po::options_description layer_options_description(LayerRunOptions* o, LayerOptionText* text) {
    LayerConfig& c = o->layer;
    po::options_description general("General");
    general.add_options()("help,h", "print this help and exit")(
        "config", po::value<std::string>(&text->config_file)->default_value(""),
        "INI file with any of these options as key = value (the command line wins)");
    po::options_description layer("MoE layer (run)");
    layer.add_options()("renormalize", po::value<bool>(&c.renormalize)->default_value(c.renormalize),
                        "topk: renormalise the kept top-k weights to sum to 1 (true|false)")(
        "expert-bias", po::value<bool>(&c.expert_bias)->default_value(c.expert_bias),
        "expert FFN biases b1, b2 (true|false)")(
        "aux-loss-coef", po::value<double>(&c.aux_loss_coef)->default_value(c.aux_loss_coef),
        "load-balancing loss coefficient [1]")(
        "z-loss-coef", po::value<double>(&c.z_loss_coef)->default_value(c.z_loss_coef),
        "router z-loss coefficient [1]")(
        "ranks-per-node", po::value<int>(&o->ranks_per_node)->default_value(o->ranks_per_node),
        "emulate nodes of N consecutive ranks [ranks]; 0 = the real nodes (MPI shared-memory split)")(
        "topology", po::value<std::string>(&o->topology_path)->default_value(""),
        "cluster file (topology/*.yaml, docs/topology.md): link bandwidths and compute rate for the "
        "topology gate and shadowing");
    po::options_description run("Run");
    run.add_options()("steps", po::value<int64_t>(&o->steps)->default_value(o->steps),
                      "timed steps (forward + backward) [steps]")(
        "warmup", po::value<int64_t>(&o->warmup)->default_value(o->warmup),
        "untimed steps before them [steps]")("seed", po::value<uint64_t>(&o->seed)->default_value(o->seed),
                                             "seed of tokens, parameters and gate randomness")(
        "lr", po::value<double>(&o->learning_rate)->default_value(o->learning_rate),
        "SGD learning rate applied after each step so routing moves [1]; 0 = no update")(
        "log", po::value<std::string>(&o->log_path)->default_value(""),
        "HDF5 log of every step (FILE.h5; empty = none); schema in docs/hdf5.md")(
        "log-flush-every", po::value<int64_t>(&o->log_flush_every)->default_value(o->log_flush_every),
        "flush the log every N steps [steps]")(
        "dump", po::value<std::string>(&o->dump_path)->default_value(""),
        "HDF5 dump of the first step: inputs, parameters, outputs, routing, gradients (FILE.h5)")(
        "blas-threads", po::value<int>(&o->blas_threads)->default_value(o->blas_threads),
        "BLAS threads per rank [threads]")(
        "inject-nan-step", po::value<int64_t>(&o->inject_nan_step)->default_value(o->inject_nan_step),
        "fault injection for tests: put a NaN into x at this step [step]; -1 = never");
    po::options_description all;
    all.add(general).add(layer_decision_options_description(&c, text)).add(layer).add(run);
    return all;
}

bool parse_layer_options(
    int argc, char** argv, bool print_help, LayerRunOptions* out, Attributes* options_out) {
    LayerOptionText text;
    po::options_description description = layer_options_description(out, &text);
    po::variables_map vm;
    const std::string usage =
        "usage: expar layer [options]\n\nRuns steps of one expert-parallel MoE layer (forward and "
        "backward) on synthetic tokens.\n";
    if (!parse_command_options(argc, argv, description, usage, print_help, &vm)) return false;
    LayerConfig& c = out->layer;
    apply_layer_option_text(text, vm, &c);
    EXPAR_REQUIRE(out->steps > 0, "--steps must be positive (got " << out->steps << ")");
    EXPAR_REQUIRE(out->warmup >= 0, "--warmup must be >= 0 (got " << out->warmup << ")");
    EXPAR_REQUIRE(out->log_flush_every > 0, "--log-flush-every must be positive");
    EXPAR_REQUIRE(out->blas_threads > 0, "--blas-threads must be positive");
    EXPAR_REQUIRE(std::isfinite(out->learning_rate) && out->learning_rate >= 0, "--lr must be >= 0");
    *options_out = options_as_attributes(vm);
    // The effective top-k (switch forces 1) is what the file should record.
    for (auto& [key, value] : *options_out)
        if (key == "top-k") value = std::to_string(c.top_k);
    return true;
}

po::parsed_options parse_command_line(const std::vector<std::string>& args,
                                      const po::options_description& description) {
    try {
        // No guessing of abbreviations: `--expert` must not silently mean `--experts`.
        const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
        po::parsed_options parsed = po::command_line_parser(args).options(description).style(style).run();
        // Without this a stray word (`expar layer 4`, a value after a flag that takes none) is dropped.
        const std::vector<std::string> stray =
            po::collect_unrecognized(parsed.options, po::include_positional);
        EXPAR_REQUIRE(stray.empty(), "unexpected argument '"
                                         << stray.front() << "': every setting is an --option (see --help)");
        return parsed;
    } catch (const po::error& error) {
        EXPAR_FAIL(error.what());
    }
}

po::parsed_options parse_command_line(int argc, char** argv, const po::options_description& description) {
    return parse_command_line(std::vector<std::string>(argv + std::min(argc, 1), argv + argc), description);
}

void store_config_file(const po::options_description& description, po::variables_map* vm) {
    const auto file_it = vm->find("config");
    if (file_it == vm->end() || file_it->second.as<std::string>().empty()) return;
    const std::string path = file_it->second.as<std::string>();
    std::istringstream in(read_text_file(path, "config file"));
    try {
        po::parsed_options parsed = po::parse_config_file(in, description);
        for (const po::option& option : parsed.options)
            EXPAR_REQUIRE(option.string_key != "config", "config file '"
                                                             << path
                                                             << "' sets config: a config file cannot "
                                                                "name another; merge them into one");
        // The command line wins: a key it set is dropped from the file (for a single value store() would
        // keep the first anyway, but a list such as --sweep would take both).
        auto& options = parsed.options;
        options.erase(std::remove_if(options.begin(), options.end(),
                                     [&](const po::option& option) {
                                         const auto it = vm->find(option.string_key);
                                         return it != vm->end() && !it->second.defaulted();
                                     }),
                      options.end());
        po::store(parsed, *vm);
    } catch (const po::error& error) {
        EXPAR_FAIL("config file '" << path << "': " << error.what());
    }
}

bool parse_command_options(int argc,
                           char** argv,
                           const po::options_description& description,
                           const std::string& usage,
                           bool print_help,
                           po::variables_map* vm) {
    try {
        po::store(parse_command_line(argc, argv, description), *vm);
        if (vm->count("help") || print_help) {
            std::ostringstream help;
            help << usage << "\n" << description << "\n";
            if (world_rank_or_minus_one() <= 0) std::cout << help.str();
            return false;
        }
        store_config_file(description, vm);
        po::notify(*vm);
    } catch (const po::error& error) {
        EXPAR_FAIL(error.what());
    }
    return true;
}

namespace {

// The fewest significant digits (at most 9, which always suffice) that read back as the same float:
// 0.001f is written "0.001", not "0.00100000005".
std::string shortest_float_text(float value) {
    for (int digits = 6;; ++digits) {
        std::ostringstream text;
        text << std::setprecision(digits) << value;
        if (digits == 9 || std::strtof(text.str().c_str(), nullptr) == value) return text.str();
    }
}

}  // namespace

po::typed_value<float>* float_value(float* target) {
    return po::value<float>(target)->default_value(*target, shortest_float_text(*target));
}

Attributes options_as_attributes(const po::variables_map& vm) {
    Attributes out;
    for (const auto& [key, value] : vm) {
        if (key == "help") continue;
        std::ostringstream text;
        text.precision(17);  // doubles round-trip exactly
        const boost::any& any = value.value();
        if (any.type() == typeid(std::string))
            text << boost::any_cast<std::string>(any);
        else if (any.type() == typeid(int64_t))
            text << boost::any_cast<int64_t>(any);
        else if (any.type() == typeid(uint64_t))
            text << boost::any_cast<uint64_t>(any);
        else if (any.type() == typeid(int))
            text << boost::any_cast<int>(any);
        else if (any.type() == typeid(double))
            text << boost::any_cast<double>(any);
        else if (any.type() == typeid(float))
            text << shortest_float_text(boost::any_cast<float>(any));
        else if (any.type() == typeid(bool))
            text << (boost::any_cast<bool>(any) ? "true" : "false");
        else if (any.type() == typeid(std::vector<std::string>)) {
            const auto& values = boost::any_cast<std::vector<std::string>>(any);
            for (size_t i = 0; i < values.size(); ++i) text << (i ? "\n" : "") << values[i];
        } else  // an option type added without a line here would be logged as an empty string
            EXPAR_FAIL("option --" << key << " has a type the log cannot write (options.cpp)");
        out.emplace_back(key, text.str());
    }
    return out;
}

}  // namespace expar
