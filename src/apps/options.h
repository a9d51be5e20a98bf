// Command-line and INI options of the expar subcommands (Boost.Program_options).
// Every option has a default and a unit in its help text; --config FILE reads the same keys from an
// INI file, and the command line wins over the file.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "config.h"
#include "layer_io.h"

namespace expar {

struct LayerRunOptions {
    LayerConfig layer;
    int64_t steps = 10;
    int64_t warmup = 2;
    uint64_t seed = 1;
    double learning_rate = 0.0;
    std::string log_path;
    int64_t log_flush_every = 1;
    std::string dump_path;
    int blas_threads = 1;
    int64_t inject_nan_step = -1;
    int ranks_per_node = 0;     // 0 = from MPI (shared-memory split)
    std::string topology_path;  // empty = none
};

// Enum-valued options as text: converted after parsing so errors name the option.
struct LayerOptionText {
    std::string gate = "topk", activation = "gelu", scope = "local", policy = "position";
    std::string schedule = "plain", gate_topology = "none";
    std::string config_file;
};

boost::program_options::options_description layer_options_description(LayerRunOptions* out,
                                                                      LayerOptionText* text);

// The layer options that decide who sends what (E, k, gate, capacity, widths, T, skew, schedule, group
// size, topology gate, node limit, router bias, shadowing), shared by `expar layer` and `expar simulate`.
boost::program_options::options_description layer_decision_options_description(LayerConfig* out,
                                                                               LayerOptionText* text);
// Converts the enum-valued options of text into *config (errors name the option); --gate switch forces
// top-1 unless --top-k was given.
void apply_layer_option_text(const LayerOptionText& text,
                             const boost::program_options::variables_map& vm,
                             LayerConfig* config);

// Parses `expar layer ...` (argv after the subcommand). Returns false if help was printed.
// Throws an all-ranks expar::Error on any bad option. options_out receives every option as text.
bool parse_layer_options(
    int argc, char** argv, bool print_help, LayerRunOptions* out, Attributes* options_out);

// args (the words after the subcommand) against description. Abbreviations are refused, and so is a word
// that is not an option. Throws an all-ranks expar::Error.
boost::program_options::parsed_options parse_command_line(
    const std::vector<std::string>& args, const boost::program_options::options_description& description);
// The same for a subcommand's argv (argv[0] is the subcommand's name).
boost::program_options::parsed_options parse_command_line(
    int argc, char** argv, const boost::program_options::options_description& description);

// If vm names --config FILE, stores the file's keys into vm: options stored before (the command line)
// win. A missing or unreadable file, a directory, an unknown key, or a `config` key in the file (a config
// cannot name another) throws an all-ranks expar::Error.
void store_config_file(const boost::program_options::options_description& description,
                       boost::program_options::variables_map* vm);

// Shared by all subcommands: parses argv against description. With --help (or
// print_help) prints usage and the options on rank 0 and returns false. --config FILE adds the file's keys
// (the command line wins). Abbreviations are refused. Throws an all-ranks expar::Error on bad input.
bool parse_command_options(int argc,
                           char** argv,
                           const boost::program_options::options_description& description,
                           const std::string& usage,
                           bool print_help,
                           boost::program_options::variables_map* vm);

// A float option bound to *target, its current value the default, shown in --help as typed: (=0.001),
// not (=0.00100000005).
boost::program_options::typed_value<float>* float_value(float* target);

// Every option in vm (defaults included) as text, for the root attributes of HDF5 files.
Attributes options_as_attributes(const boost::program_options::variables_map& vm);

}  // namespace expar
