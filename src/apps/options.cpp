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

po::options_description general_options(std::string* config_file) {
    po::options_description general("General");
    general.add_options()("help,h", "print this help and exit")(
        "config", po::value<std::string>(config_file)->default_value(*config_file),
        "INI file with any of these options as key = value (the command line wins)");
    return general;
}

po::options_description moe_layer_options(LayerConfig* c, LayerInputs inputs) {
    const bool standalone = inputs == LayerInputs::standalone;
    po::options_description layer("MoE layer");
    auto add = layer.add_options();
    add("experts", po::value<int64_t>(&c->num_experts)->default_value(c->num_experts),
        "number of experts E (global; E % ranks == 0)");
    add("top-k", po::value<int>(&c->top_k)->default_value(c->top_k), "experts per token k");
    add("gate", enum_value(&c->gate), enum_help<GateKind>().c_str());
    add("capacity-factor", po::value<double>(&c->capacity_factor)->default_value(c->capacity_factor),
        "capacity factor cf [1]; capacity = ceil(cf*tokens*k/E) tokens per expert; 0 = dropless");
    add("capacity-scope", enum_value(&c->capacity_scope), enum_help<CapacityScope>().c_str());
    add("drop-policy", enum_value(&c->drop_policy), enum_help<DropPolicy>().c_str());
    if (standalone)
        add("d-model", po::value<int64_t>(&c->d_model)->default_value(c->d_model),
            "model width d [elements]");
    add("d-ff", po::value<int64_t>(&c->d_ff)->default_value(c->d_ff), "expert hidden width f [elements]");
    add("activation", enum_value(&c->activation), ("expert activation: " + enum_help<Activation>()).c_str());
    if (standalone) {
        add("tokens-per-rank", po::value<int64_t>(&c->tokens_per_rank)->default_value(c->tokens_per_rank),
            "tokens per rank per step [tokens]");
        add("skew", po::value<double>(&c->skew)->default_value(c->skew),
            "routing skew: Zipf exponent s of a fixed router bias -s*ln(e+1) [1]; 0 = none");
    }
    return layer;
}

po::options_description schedule_options(LayerConfig* c) {
    po::options_description schedule("Schedules, topology-aware routing, shadowing (docs/layer.md)");
    schedule.add_options()("schedule", enum_value(&c->schedule),
                           ("token exchange: " + enum_help<ScheduleKind>()).c_str())(
        "group-size", po::value<int>(&c->group_size)->default_value(c->group_size), kGroupSizeHelp)(
        "gate-topology", enum_value(&c->gate_topology),
        (enum_help<GateTopology>() +
         ": at most L = W_net/(M*W_local)*T*k assignments per rank leave the node; the lowest-scoring others "
         "move to on-node experts (needs --topology)")
            .c_str())(
        "node-limit", po::value<int>(&c->node_limit)->default_value(c->node_limit),
        "DeepSeek-V3 node-limited routing: a token's experts lie on at most M nodes [nodes]; 0 = off")(
        "router-bias", po::value<double>(&c->router_bias_rate)->default_value(c->router_bias_rate),
        "DeepSeek-V3 auxiliary-loss-free balancing: per-expert selection bias moved by +-GAMMA each step "
        "[1]; 0 = off")("shadow", po::value<bool>(&c->shadow)->default_value(c->shadow),
                        "FasterMoE dynamic shadowing of hot experts (true|false; needs --topology)")(
        "shadow-max-experts", po::value<int>(&c->shadow_max_experts)->default_value(c->shadow_max_experts),
        "most experts shadowed in one step (buffers for their weights are kept) [experts]");
    return schedule;
}

po::options_description moe_training_options(LayerConfig* c) {
    po::options_description training("MoE layer parameters and losses");
    training.add_options()("renormalize", po::value<bool>(&c->renormalize)->default_value(c->renormalize),
                           "topk: renormalise the kept top-k weights to sum to 1 (true|false)")(
        "expert-bias", po::value<bool>(&c->expert_bias)->default_value(c->expert_bias),
        "expert FFN biases b1, b2 (true|false)")(
        "aux-loss-coef", po::value<double>(&c->aux_loss_coef)->default_value(c->aux_loss_coef),
        "load-balancing loss coefficient [1]")(
        "z-loss-coef", po::value<double>(&c->z_loss_coef)->default_value(c->z_loss_coef),
        "router z-loss coefficient [1]");
    return training;
}

po::options_description cluster_options(ClusterOptions* o) {
    po::options_description cluster("Cluster");
    cluster.add_options()("ranks-per-node",
                          po::value<int>(&o->ranks_per_node)->default_value(o->ranks_per_node),
                          kRanksPerNodeHelp)(
        "topology", po::value<std::string>(&o->topology_path)->default_value(o->topology_path),
        "cluster file (topology/*.yaml, docs/topology.md): link bandwidths and compute rate for the "
        "topology gate and shadowing");
    return cluster;
}

po::options_description output_options(OutputOptions* o, const char* dump_contents) {
    po::options_description output("Output");
    output.add_options()("log", po::value<std::string>(&o->log_path)->default_value(o->log_path),
                         "HDF5 log of every step (FILE.h5; empty = none); schema in docs/hdf5.md")(
        "log-flush-every", po::value<int64_t>(&o->log_flush_every)->default_value(o->log_flush_every),
        "flush the log every N steps [steps]")(
        "dump", po::value<std::string>(&o->dump_path)->default_value(o->dump_path),
        (std::string("HDF5 dump of the first step: ") + dump_contents + " (FILE.h5; empty = none)").c_str())(
        "blas-threads", po::value<int>(&o->blas_threads)->default_value(o->blas_threads), kBlasThreadsHelp);
    return output;
}

void validate(const OutputOptions& o) {
    EXPAR_REQUIRE(o.log_flush_every > 0, "--log-flush-every must be positive");
    validate_blas_threads(o.blas_threads);
}

void validate_blas_threads(int blas_threads) {
    EXPAR_REQUIRE(blas_threads > 0, "--blas-threads must be positive");
}

void finish_layer_options(const po::variables_map& vm, LayerConfig* c) {
    const auto top_k = vm.find("top-k");
    if (c->gate == GateKind::switch_top1 && (top_k == vm.end() || top_k->second.defaulted())) c->top_k = 1;
}

po::options_description layer_options_description(LayerRunOptions* o) {
    LayerConfig& c = o->layer;
    po::options_description run("Run");
    run.add_options()("steps", po::value<int64_t>(&o->steps)->default_value(o->steps),
                      "timed steps (forward + backward) [steps]")(
        "warmup", po::value<int64_t>(&o->warmup)->default_value(o->warmup),
        "untimed steps before them [steps]")("seed", uint64_value(&o->seed),
                                             "seed of tokens, parameters and gate randomness")(
        "lr", po::value<double>(&o->learning_rate)->default_value(o->learning_rate),
        "SGD learning rate applied after each step so routing moves [1]; 0 = no update")(
        "inject-nan-step", po::value<int64_t>(&o->inject_nan_step)->default_value(o->inject_nan_step),
        "fault injection for tests: put a NaN into x at this step [step]; -1 = never");
    po::options_description all;
    all.add(general_options(&o->config_file))
        .add(moe_layer_options(&c, LayerInputs::standalone))
        .add(schedule_options(&c))
        .add(moe_training_options(&c))
        .add(cluster_options(&o->cluster))
        .add(run)
        .add(output_options(&o->output, "inputs, parameters, outputs, routing, gradients"));
    return all;
}

bool parse_layer_options(
    int argc, char** argv, bool print_help, LayerRunOptions* out, Attributes* options_out) {
    po::options_description description = layer_options_description(out);
    po::variables_map vm;
    const std::string usage =
        "usage: expar layer [options]\n\nRuns steps of one expert-parallel MoE layer (forward and "
        "backward) on synthetic tokens.\n";
    if (!parse_command_options(argc, argv, description, usage, print_help, &vm)) return false;
    LayerConfig& c = out->layer;
    finish_layer_options(vm, &c);
    EXPAR_REQUIRE(out->steps > 0, "--steps must be positive (got " << out->steps << ")");
    EXPAR_REQUIRE(out->warmup >= 0, "--warmup must be >= 0 (got " << out->warmup << ")");
    validate(out->output);
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
    const std::string text = read_text_file(path, "config file");
    // Boost reports a line "= 4" as "unrecognised option ''", without the line.
    std::istringstream lines(text);
    int line_number = 0;
    for (std::string line; std::getline(lines, line);) {
        ++line_number;
        const size_t first = line.find_first_not_of(" \t\r");
        EXPAR_REQUIRE(
            first == std::string::npos || line[first] != '=',
            "config file '" << path << "' line " << line_number << ": an option name is missing before '='");
    }
    std::istringstream in(text);
    try {
        po::parsed_options parsed = po::parse_config_file(in, description);
        for (const po::option& option : parsed.options) {
            EXPAR_REQUIRE(option.string_key != "config", "config file '"
                                                             << path
                                                             << "' sets config: a config file cannot "
                                                                "name another; merge them into one");
            // Help is printed before the file is read (the file may be what is wrong); a config that
            // asked for it would be silently ignored.
            EXPAR_REQUIRE(
                option.string_key != "help",
                "config file '" << path << "' sets help: help is a command-line option; run with --help");
        }
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
    } catch (const UnknownEnumName& error) {  // as on the command line: it names the option
        EXPAR_FAIL(error.what());
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

// uint64_value's semantic: boost's parse after a check for a minus sign (the only thing that wraps).
class Uint64Value : public po::typed_value<uint64_t> {
   public:
    explicit Uint64Value(uint64_t* target) : po::typed_value<uint64_t>(target) {}
    void xparse(boost::any& value_store, const std::vector<std::string>& tokens) const override {
        for (const std::string& token : tokens) {
            const size_t first = token.find_first_not_of(" \t");
            if (first == std::string::npos || token[first] != '-') continue;
            po::validation_error error(po::validation_error::invalid_option_value, "", token);
            error.set_substitute("value", token);
            error.m_error_template =
                "the argument ('%value%') for option '%canonical_option%' is invalid: it is negative, "
                "and the option takes a number >= 0";
            throw error;
        }
        po::typed_value<uint64_t>::xparse(value_store, tokens);
    }
};

}  // namespace

po::typed_value<uint64_t>* uint64_value(uint64_t* target) {
    auto* value = new Uint64Value(target);  // owned by the options_description, as po::value's
    value->default_value(*target);
    return value;
}

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
        else if (std::string name; enum_option_text(any, &name))
            text << name;
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
