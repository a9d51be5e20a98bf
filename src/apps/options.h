// Command-line and INI options of the expar subcommands (Boost.Program_options).
// Every option has a default and a unit in its help text; --config FILE reads the same keys from an
// INI file, and the command line wins over the file.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "config.h"
#include "enum_option.h"
#include "layer_io.h"

namespace expar {

// --log, --log-flush-every, --dump, --blas-threads of the commands that run layers (layer, train).
struct OutputOptions {
    std::string log_path;
    int64_t log_flush_every = 1;
    std::string dump_path;
    int blas_threads = 1;
};

// The cluster of the commands that run on the MPI ranks (layer, train).
struct ClusterOptions {
    int ranks_per_node = 0;     // 0 = from MPI (shared-memory split)
    std::string topology_path;  // empty = none
};

struct LayerRunOptions {
    LayerConfig layer;
    int64_t steps = 10;
    int64_t warmup = 2;
    uint64_t seed = 1;
    double learning_rate = 0.0;
    OutputOptions output;
    int64_t inject_nan_step = -1;
    ClusterOptions cluster;
    std::string config_file;
};

// ---------------------------------------------------------------------------------------------------
// Option groups, each option defined once and shared by every command that takes it. A group's defaults
// are its targets' values when it is built, so a command that needs another default sets the target
// first (and says why).

// --help and --config FILE (every command); add a command's own general options to the result.
boost::program_options::options_description general_options(std::string* config_file);

// Where the MoE layer's input comes from. A layer run alone (`expar layer`, `expar simulate`) has its own
// --d-model, --tokens-per-rank and --skew; in `expar train` the width is the model's, the tokens are the
// batch's and the routing follows the data, so those three are not layer options there.
enum class LayerInputs { standalone, model };

// The layer's shape and routing decisions (E, k, gate, capacity, widths, activation; with standalone
// inputs also d, T and skew): layer, simulate, train.
boost::program_options::options_description moe_layer_options(LayerConfig* out, LayerInputs inputs);
// Schedule, topology-aware routing and shadowing: layer, simulate, train.
boost::program_options::options_description schedule_options(LayerConfig* out);
// The trained layer's parameters and losses (renormalize, expert bias, loss coefficients): layer, train.
boost::program_options::options_description moe_training_options(LayerConfig* out);
// --ranks-per-node and --topology of a run on the MPI ranks: layer, train.
boost::program_options::options_description cluster_options(ClusterOptions* out);
// One definition each for the options that commands outside these groups take too (alltoall, calibrate).
constexpr const char* kRanksPerNodeHelp =
    "emulate nodes of N consecutive ranks [ranks]; 0 = the real nodes (MPI shared-memory split)";
constexpr const char* kBlasThreadsHelp = "BLAS threads per rank [threads]";
// --blas-threads must be positive: an all-ranks expar::Error otherwise.
void validate_blas_threads(int blas_threads);
// --log, --log-flush-every, --dump (its contents named by dump_contents), --blas-threads: layer, train.
boost::program_options::options_description output_options(OutputOptions* out, const char* dump_contents);
// Throws an all-ranks expar::Error unless every value of *options is in range.
void validate(const OutputOptions& options);

// After parsing: --gate switch forces top-1 unless --top-k was given.
void finish_layer_options(const boost::program_options::variables_map& vm, LayerConfig* config);

boost::program_options::options_description layer_options_description(LayerRunOptions* out);

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

// An unsigned option bound to *target, its current value the default. Boost reads "-1" into a uint64_t
// as 2^64 - 1 (lexical_cast wraps); this one refuses a negative value instead, naming the option.
// Every unsigned option is declared through it.
boost::program_options::typed_value<uint64_t>* uint64_value(uint64_t* target);

// Every option in vm (defaults included) as text, for the root attributes of HDF5 files.
Attributes options_as_attributes(const boost::program_options::variables_map& vm);

}  // namespace expar
