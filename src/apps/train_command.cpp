#include "train_command.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "blas.h"
#include "check.h"
#include "checkpoint.h"
#include "comm.h"
#include "data.h"
#include "git_revision.h"
#include "options.h"
#include "output_paths.h"
#include "timer.h"
#include "topology.h"
#include "train_io.h"
#include "trainer.h"

namespace po = boost::program_options;

namespace expar {

namespace {

struct TrainOptions {
    TrainConfig train;
    DataOptions data;
    std::string config_file;
    int64_t tokens_per_rank = 0;  // 0 = B·S; otherwise it must equal B·S
    int64_t eval_every = 0, eval_windows = 0;
    // Training runs many more steps than `expar layer`: the log is flushed every 10 by default, not 1.
    OutputOptions output{"", 10, "", 1};
    int64_t log_routing_every = 10, print_every = 50;
    ClusterOptions cluster;
    // Checkpoints (src/train/checkpoint.h).
    int64_t save_every = 0;
    std::string checkpoint_path, resume_path;
    int64_t stop_at = 0;  // 0 = train to --steps
    float learning_rate = 1e-3f, min_lr_ratio = 0.1f, weight_decay = 0.1f;
};

po::options_description train_options_description(TrainOptions* o) {
    TrainConfig& t = o->train;
    ModelConfig& m = t.model;
    LayerConfig& c = t.moe.layer;
    SyntheticLanguageConfig& s = o->data.synthetic;
    // Training defaults differ from the layer benchmark's: a small model's experts.
    c.d_ff = 256;
    po::options_description model("Model (vocabulary size comes from the data)");
    model.add_options()("seq-len", po::value<int64_t>(&m.seq_len)->default_value(m.seq_len),
                        "sequence length S, also the learned positions [tokens]")(
        "d-model", po::value<int64_t>(&m.d_model)->default_value(m.d_model), "model width d [elements]")(
        "num-heads", po::value<int64_t>(&m.num_heads)->default_value(m.num_heads),
        "attention heads H (divides d)")(
        "num-layers", po::value<int64_t>(&m.num_layers)->default_value(m.num_layers), "Transformer blocks L")(
        "d-ff-dense", po::value<int64_t>(&m.d_ff_dense)->default_value(m.d_ff_dense),
        "hidden width of the dense FFN blocks [elements]")(
        "moe-every", po::value<int64_t>(&m.moe_every)->default_value(2),
        "every N-th block (N, 2N, ...) has an MoE FFN; 0 = dense model [blocks]")(
        "init-std", float_value(&m.init_std),
        "std of the N(0, s^2) init of matrices and embeddings (GPT-2) [1]");
    // The MoE layer's own options are those of `expar layer` (options.h); these are the MoE blocks' extras.
    po::options_description moe("MoE blocks");
    moe.add_options()("eval-capacity-factor",
                      po::value<double>(&t.eval_capacity_factor)->default_value(t.eval_capacity_factor),
                      "capacity factor while evaluating (Switch: 2.0) [1]; 0 = dropless")(
        "shared-experts", po::value<int64_t>(&t.moe.shared_experts)->default_value(0),
        "DeepSeekMoE/Qwen shared experts of width d-ff applied to every token, added to the MoE output")(
        "dense-branch-ff", po::value<int64_t>(&t.moe.dense_branch_ff)->default_value(0),
        "Arctic dense residual FFN beside the MoE, hidden width F [elements]; 0 = none")(
        // Not the layer's --tokens-per-rank: here the batch decides the tokens, and this only checks them.
        "tokens-per-rank", po::value<int64_t>(&o->tokens_per_rank)->default_value(0),
        "check: MoE tokens per rank, must equal batch-size*seq-len [tokens]; 0 = take that");
    po::options_description training("Training");
    training.add_options()("batch-size", po::value<int64_t>(&t.batch_size)->default_value(t.batch_size),
                           "sequences per rank per step B [sequences]")(
        "steps", po::value<int64_t>(&t.steps)->default_value(t.steps), "optimizer steps [steps]")(
        "lr", float_value(&o->learning_rate), "peak learning rate [1]")(
        "warmup-steps", po::value<int64_t>(&t.warmup_steps)->default_value(t.warmup_steps),
        "linear warmup [steps], then cosine decay to min-lr-ratio*lr at --steps")(
        "min-lr-ratio", float_value(&o->min_lr_ratio), "final learning rate / peak [1]")(
        "weight-decay", float_value(&o->weight_decay),
        "AdamW decoupled weight decay on matrices and embeddings [1]")(
        "grad-clip", po::value<double>(&t.grad_clip)->default_value(t.grad_clip),
        "max global gradient norm [1]; 0 = no clipping")(
        "allreduce-bucket-bytes",
        po::value<int64_t>(&t.allreduce_bucket_bytes)->default_value(t.allreduce_bucket_bytes),
        "size of one gradient all-reduce call [bytes]")(
        "seed", uint64_value(&t.seed), "seed of parameters, gate randomness and training batches");
    po::options_description data("Data (docs/data.md)");
    data.add_options()("data", enum_value(&o->data.kind), enum_help<DataKind>().c_str())(
        "data-dir", po::value<std::string>(&o->data.data_dir)->default_value(o->data.data_dir),
        "brown: directory written by scripts/fetch_brown.sh")(
        "text-file", po::value<std::string>(&o->data.text_file)->default_value(""),
        "bytes: any file, split 80/10/10 into train/valid/test")(
        "synthetic-vocab", po::value<int64_t>(&s.vocab_size)->default_value(s.vocab_size),
        "synthetic: vocabulary size V [tokens]")(
        "synthetic-sources", po::value<int64_t>(&s.num_sources)->default_value(s.num_sources),
        "synthetic: Markov sources K (divides V)")(
        "synthetic-branching", po::value<int64_t>(&s.branching)->default_value(s.branching),
        "synthetic: successors per token inside a source's region")(
        "synthetic-leak", po::value<double>(&s.leak)->default_value(s.leak),
        "synthetic: probability of a uniform jump [1]")(
        "synthetic-sharpness", po::value<double>(&s.sharpness)->default_value(s.sharpness),
        "synthetic: spread of successor log-weights [nats]")("synthetic-seed", uint64_value(&s.seed),
                                                             "synthetic: seed of the tables")(
        "synthetic-eval-sequences",
        po::value<int64_t>(&o->data.synthetic_eval_sequences)
            ->default_value(o->data.synthetic_eval_sequences),
        "synthetic: sequences per valid/test split [sequences]");
    po::options_description output("Evaluation and output");
    output.add_options()("eval-every", po::value<int64_t>(&o->eval_every)->default_value(0),
                         "validation perplexity every N steps [steps]; 0 = only at the end")(
        "eval-windows", po::value<int64_t>(&o->eval_windows)->default_value(0),
        "periodic validation: at most N windows of S tokens [windows]; 0 = all (the final valid and test "
        "passes score every token)")(
        "log-routing-every", po::value<int64_t>(&o->log_routing_every)->default_value(o->log_routing_every),
        "log the [source rank x expert] routing counts every K steps [steps]; 0 = never")(
        "print-every", po::value<int64_t>(&o->print_every)->default_value(o->print_every),
        "progress line every N steps when stdout is not a terminal [steps]")(
        "save-every", po::value<int64_t>(&o->save_every)->default_value(0),
        "write --checkpoint every N steps [steps]; 0 = only at the end")(
        "checkpoint", po::value<std::string>(&o->checkpoint_path)->default_value(""),
        "checkpoint file (FILE.h5), rewritten atomically every --save-every steps and at the end; empty = "
        "none")("resume", po::value<std::string>(&o->resume_path)->default_value(""),
                "resume from this checkpoint (FILE.h5), at any rank count; empty = start fresh")(
        "stop-at", po::value<int64_t>(&o->stop_at)->default_value(0),
        "stop after this step (checkpoint, no final evaluation), e.g. to fit a job's time limit; the "
        "learning-rate schedule still spans --steps [steps]; 0 = train to --steps");
    po::options_description all;
    all.add(general_options(&o->config_file))
        .add(model)
        .add(moe_layer_options(&c, LayerInputs::model))
        .add(moe_training_options(&c))
        .add(moe)
        .add(schedule_options(&c))
        .add(cluster_options(&o->cluster))
        .add(training)
        .add(data)
        .add(output)
        .add(output_options(&o->output, "parameters, batch, logits, losses, gradients"));
    return all;
}

LayerCluster make_cluster(const TrainOptions& o) {
    NodeMap nodes = make_node_map(MPI_COMM_WORLD, o.cluster.ranks_per_node);
    if (o.cluster.topology_path.empty()) return LayerCluster{std::move(nodes)};
    return cluster_with_topology_rates(std::move(nodes), load_topology(o.cluster.topology_path),
                                       kLayerPrecision);
}

// One progress line on rank 0: rewritten in place on a terminal, a plain line every print_every steps
// (and the last) otherwise, so CI logs stay small.
void print_progress(bool tty,
                    int64_t step,
                    int64_t steps,
                    int64_t print_every,
                    const StepResult& r,
                    double tokens_per_s,
                    double seconds_per_step) {
    const bool last = step + 1 == steps;
    if (!tty && !last && (print_every <= 0 || (step + 1) % print_every != 0)) return;
    const double eta = seconds_per_step * static_cast<double>(steps - step - 1);
    const double dropped = r.requested > 0 ? 100.0 * static_cast<double>(r.dropped) / r.requested : 0.0;
    std::printf(
        "%sstep %lld/%lld  loss %.4f  aux %.4f  z %.3f  lr %.2e  |g| %.3f  %.0f tok/s  dropped %.1f%%  ETA "
        "%.0fs%s",
        tty ? "\r" : "", (long long)(step + 1), (long long)steps, r.loss, r.aux_loss, r.z_loss,
        r.learning_rate, r.grad_norm, tokens_per_s, dropped, eta, tty ? (last ? "\n" : "") : "\n");
    std::fflush(stdout);
}

}  // namespace

int run_train_command(int argc, char** argv, bool print_help) {
    TrainOptions o;
    po::options_description description = train_options_description(&o);
    po::variables_map vm;
    const std::string usage =
        "usage: expar train [options]\n\nTrains the MoE Transformer language model expert-parallel over the "
        "MPI ranks (docs/train.md).\n";
    if (!parse_command_options(argc, argv, description, usage, print_help, &vm)) return 0;
    Attributes attributes = options_as_attributes(vm);

    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    TrainConfig& tc = o.train;
    LayerConfig& lc = tc.moe.layer;
    finish_layer_options(vm, &lc);
    tc.learning_rate = o.learning_rate;
    tc.min_lr_ratio = o.min_lr_ratio;
    tc.adamw.weight_decay = o.weight_decay;
    EXPAR_REQUIRE(o.eval_every >= 0, "--eval-every must be >= 0 (got " << o.eval_every << ")");
    EXPAR_REQUIRE(o.eval_windows >= 0, "--eval-windows must be >= 0 (got " << o.eval_windows << ")");
    validate(o.output);
    EXPAR_REQUIRE(o.log_routing_every >= 0, "--log-routing-every must be >= 0");
    EXPAR_REQUIRE(o.tokens_per_rank == 0 || o.tokens_per_rank == tc.batch_size * tc.model.seq_len,
                  "--tokens-per-rank " << o.tokens_per_rank << " does not match --batch-size "
                                       << tc.batch_size << " x --seq-len " << tc.model.seq_len << " = "
                                       << tc.batch_size * tc.model.seq_len << " rows per rank");
    EXPAR_REQUIRE(o.save_every >= 0, "--save-every must be >= 0 (got " << o.save_every << ")");
    EXPAR_REQUIRE(o.save_every == 0 || !o.checkpoint_path.empty(), "--save-every needs --checkpoint FILE.h5");
    EXPAR_REQUIRE(o.stop_at >= 0, "--stop-at must be >= 0 (got " << o.stop_at << ")");
    EXPAR_REQUIRE(
        o.stop_at == 0 || !o.checkpoint_path.empty(),
        "--stop-at needs --checkpoint FILE.h5 (to continue from with --resume; else the run is lost)");
    // --resume may name the --checkpoint file (continue and save in place: it is loaded before the first
    // save, which renames a complete file over it); no other output may name an input.
    std::vector<InputPath> input_files = {
        {"--config", o.config_file}, {"--topology", o.cluster.topology_path}, {"--resume", o.resume_path}};
    for (const auto& [option, path] : data_input_files(o.data)) input_files.push_back({option, path});
    require_distinct_paths(
        comm, input_files,
        {{"--log", o.output.log_path},
         {"--dump", o.output.dump_path},
         {"--checkpoint", o.checkpoint_path, /*staged=*/true, /*may_replace=*/"--resume"}});
    blas_set_num_threads(o.output.blas_threads);

    TokenData data(o.data, tc.model.seq_len, tc.batch_size, rank, P, tc.seed);
    tc.model.vocab_size = data.vocab().size();
    const LayerCluster cluster = make_cluster(o);
    Trainer trainer(tc, comm, &cluster);
    trainer_init_params(trainer);
    // Resume: parameters, AdamW moments and step, router-bias state, data position; experts re-sharded
    // when the rank count differs (src/train/checkpoint.h).
    int64_t first_step = 0;
    if (!o.resume_path.empty()) {
        TrainingState state = training_state(trainer, data.position(0));
        load_checkpoint(comm, o.resume_path, state);
        const DataPosition saved = apply_training_state(trainer, state);
        data_position_check_resume(saved, data.position(saved.next_step));
        EXPAR_REQUIRE(saved.seed == data.position(0).seed,
                      "resume with --seed " << saved.seed << ", the seed of checkpoint '" << o.resume_path
                                            << "' (got " << data.position(0).seed << ")");
        EXPAR_REQUIRE(saved.next_step <= tc.steps, "checkpoint '" << o.resume_path << "' is at step "
                                                                  << saved.next_step << ", past --steps "
                                                                  << tc.steps);
        first_step = saved.next_step;
        if (rank == 0)
            std::printf("resumed from %s at step %lld\n", o.resume_path.c_str(), (long long)first_step);
    }
    auto save = [&](int64_t next_step) {
        TrainingState state = training_state(trainer, data.position(next_step));
        // For people reading the file; a load never checks them (docs/hdf5.md, Checkpoints).
        state.info_attributes = attributes;
        state.info_attributes.emplace_back("git_revision", EXPAR_GIT_REVISION);
        state.info_attributes.emplace_back("num_ranks", std::to_string(P));
        save_checkpoint(comm, o.checkpoint_path, state);
    };

    const SyntheticLanguage* language = data.synthetic();
    if (language) {
        attributes.emplace_back("synthetic_entropy_upper_nats",
                                std::to_string(language->entropy().optimal_upper(tc.model.seq_len)));
        attributes.emplace_back("synthetic_entropy_lower_nats",
                                std::to_string(language->entropy().optimal_lower(tc.model.seq_len)));
    }
    std::unique_ptr<TrainLog> log;
    if (!o.output.log_path.empty())
        log = std::make_unique<TrainLog>(comm, o.output.log_path, attributes, trainer);

    const int64_t params_replicated = [&] {
        int64_t n = 0;
        for (const ParamTensor& p : trainer.replicated) n += p.count;
        return n;
    }();
    int64_t params_experts = 0;
    for (const ExpertTensor& e : trainer.experts) params_experts += e.num_global * e.item_count;
    const int64_t tokens_per_step = P * tc.batch_size * tc.model.seq_len;
    // Under mpirun stdout is a pseudo-terminal even when mpirun's own output is a pipe, so the launcher's
    // word (launch/local.sh sets EXPAR_STDOUT_IS_TTY) wins over isatty.
    const char* tty_env = std::getenv("EXPAR_STDOUT_IS_TTY");
    const bool tty =
        rank == 0 && (tty_env != nullptr ? std::string(tty_env) == "1" : isatty(STDOUT_FILENO) != 0);
    if (rank == 0) {
        std::printf(
            "expar train: %d ranks, data %s (V=%lld), L=%lld d=%lld H=%lld S=%lld, MoE every %lld: E=%lld "
            "k=%d "
            "f=%lld cf=%g (%s), shared %lld, dense branch %lld; %lld+%lld parameters (replicated+experts); "
            "%lld tokens/step\n",
            P, to_string(o.data.kind), (long long)tc.model.vocab_size, (long long)tc.model.num_layers,
            (long long)tc.model.d_model, (long long)tc.model.num_heads, (long long)tc.model.seq_len,
            (long long)tc.model.moe_every, (long long)lc.num_experts, lc.top_k, (long long)lc.d_ff,
            lc.capacity_factor, to_string(lc.capacity_scope), (long long)tc.moe.shared_experts,
            (long long)tc.moe.dense_branch_ff, (long long)params_replicated, (long long)params_experts,
            (long long)tokens_per_step);
        if (language)
            std::printf("synthetic language: best achievable loss in [%.4f, %.4f] nats/token\n",
                        language->entropy().optimal_lower(tc.model.seq_len),
                        language->entropy().optimal_upper(tc.model.seq_len));
        std::fflush(stdout);
    }

    // Periodic evaluations may be capped (--eval-windows); the final ones score every token of the split.
    auto evaluate = [&](int64_t step, Split split, bool count_tags, int64_t max_windows) {
        const EvalResult r = trainer_evaluate(trainer, data, split, max_windows, count_tags);
        if (log) {
            log->append_eval(step, r);
            if (count_tags) log->write_tag_counts(r, data.tag_names());
            log->flush();
        }
        if (rank == 0) {
            std::printf(
                "%s%s at step %lld: loss %.4f, perplexity %.2f over %lld tokens, dropped %.2f%% (eval cf "
                "%g)\n",
                tty ? "\n" : "", to_string(split), (long long)step, r.loss, r.perplexity,
                (long long)r.num_targets,
                r.requested > 0 ? 100.0 * static_cast<double>(r.dropped) / r.requested : 0.0,
                tc.eval_capacity_factor);
            std::fflush(stdout);
        }
        return r;
    };

    std::vector<int32_t> inputs(trainer.model.num_rows), targets(trainer.model.num_rows);
    double seconds_per_step = 0;
    const int64_t last_step = o.stop_at > 0 ? std::min(o.stop_at, tc.steps) : tc.steps;
    for (int64_t step = first_step; step < last_step; ++step) {
        const double t0 = now_s();
        data.train_batch(step, inputs.data(), targets.data());
        StepResult r;
        if (step == first_step && !o.output.dump_path.empty()) {
            r = write_train_dump(trainer, o.output.dump_path, attributes, step, inputs.data(),
                                 targets.data());
            trainer_update(trainer, step, &r);
        } else {
            r = trainer_step(trainer, step, inputs.data(), targets.data());
        }
        EXPAR_REQUIRE(std::isfinite(r.total_loss),
                      "the loss is not finite at step " << step << " (lower --lr?)");
        const double step_s = now_s() - t0;
        // An average that forgets: the ETA follows the current rate, not the first steps'.
        seconds_per_step = step == first_step ? step_s : 0.9 * seconds_per_step + 0.1 * step_s;
        const double tokens_per_s = static_cast<double>(tokens_per_step) / step_s;
        if (log) {
            log->append_step(step, r, step_s, tokens_per_s);
            if (o.log_routing_every > 0 && step % o.log_routing_every == 0) log->append_routing(step);
            if ((step + 1) % o.output.log_flush_every == 0) log->flush();
        }
        if (rank == 0) print_progress(tty, step, tc.steps, o.print_every, r, tokens_per_s, seconds_per_step);
        if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < tc.steps) save(step + 1);
        if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < tc.steps)
            evaluate(step + 1, Split::valid, false, o.eval_windows);
    }
    if (!o.checkpoint_path.empty()) save(last_step);
    if (last_step < tc.steps) {
        if (log) log->commit(comm);  // a planned stop is a success (docs/hdf5.md, Output files)
        if (rank == 0)
            std::printf("stopped at step %lld of %lld%s\n", (long long)last_step, (long long)tc.steps,
                        o.checkpoint_path.empty() ? "" : (", checkpoint " + o.checkpoint_path).c_str());
        return 0;
    }
    evaluate(tc.steps, Split::valid, data.has_tags(), 0);
    evaluate(tc.steps, Split::test, false, 0);
    if (log) log->commit(comm);
    if (rank == 0 && log) std::printf("log: %s\n", o.output.log_path.c_str());
    return 0;
}

}  // namespace expar
