// The executor: an event heap for α expiries and compute/delay ends, plus the flow simulator's next
// completion. A bundle is exact under max-min when its messages have the same route and the same
// size (equal routes get equal rates, so they finish together); otherwise its messages are forced to
// progress in proportion and finish together, which docs/simulator.md "Aggregation" quantifies.
#include "task_graph.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <queue>

#include "check.h"
#include "huge_pages.h"
#include "timer.h"

namespace expar {

int32_t TaskGraph::add_task(TaskKind kind, int rank, int peer, double amount, uint8_t phase) {
    EXPAR_ASSERT(kind_.size() < static_cast<size_t>(std::numeric_limits<int32_t>::max()));
    kind_.push_back(kind);
    phase_.push_back(phase);
    rank_.push_back(rank);
    peer_.push_back(peer);
    amount_.push_back(amount);
    return static_cast<int32_t>(kind_.size() - 1);
}

int32_t TaskGraph::add_transfer(int src, int dst, double bytes, uint8_t phase) {
    EXPAR_ASSERT(src != dst && bytes > 0);
    return add_task(TaskKind::transfer, src, dst, bytes, phase);
}

int32_t TaskGraph::add_bundle(const FlowHop* hops,
                              int num_hops,
                              double bytes,
                              double effective_bytes,
                              double weight,
                              double latency_s,
                              uint8_t phase,
                              int rank) {
    EXPAR_ASSERT(num_hops > 0 && bytes > 0 && effective_bytes >= bytes && weight >= 1);
    const int64_t begin = static_cast<int64_t>(bundle_hops_.size());
    HopRun run{hops[0].link, 1, hops[0].share};  // the run being extended, in registers
    for (int h = 1; h < num_hops; ++h) {
        if (hops[h].link == run.link + run.num_links && hops[h].share == run.share) {
            ++run.num_links;
            continue;
        }
        bundle_hops_.push_back(run);
        run = HopRun{hops[h].link, 1, hops[h].share};
    }
    bundle_hops_.push_back(run);
    size_t latency = 0;
    while (latency < bundle_latencies_.size() && bundle_latencies_[latency] != latency_s) ++latency;
    if (latency == bundle_latencies_.size()) bundle_latencies_.push_back(latency_s);
    EXPAR_ASSERT(latency <= UINT16_MAX && bundle_hops_.size() - begin <= UINT16_MAX);
    bundles_.push_back(Bundle{begin, effective_bytes, static_cast<float>(weight),
                              static_cast<uint16_t>(bundle_hops_.size() - begin),
                              static_cast<uint16_t>(latency)});
    return add_task(TaskKind::bundle, rank, static_cast<int32_t>(bundles_.size() - 1), bytes, phase);
}

int32_t TaskGraph::add_compute(int rank, double flops, uint8_t phase) {
    EXPAR_ASSERT(rank >= 0 && flops >= 0);
    return add_task(TaskKind::compute, rank, -1, flops, phase);
}

int32_t TaskGraph::add_delay(double seconds, uint8_t phase, int rank) {
    EXPAR_ASSERT(seconds >= 0);
    return add_task(TaskKind::delay, rank, -1, seconds, phase);
}

void TaskGraph::reserve(int64_t tasks, int64_t edges, int64_t bundles, int64_t bundle_hops) {
    reserve_huge(kind_, tasks);
    reserve_huge(phase_, tasks);
    reserve_huge(rank_, tasks);
    reserve_huge(peer_, tasks);
    reserve_huge(amount_, tasks);
    reserve_huge(edge_from_, edges);
    reserve_huge(edge_to_, edges);
    reserve_huge(bundles_, bundles);
    reserve_huge(bundle_hops_, bundle_hops);
}

void TaskGraph::add_dep(int32_t before, int32_t after) {
    EXPAR_ASSERT(before >= 0 && after >= 0 && before < num_tasks() && after < num_tasks() && before != after);
    EXPAR_ASSERT(!finalized_);
    edge_from_.push_back(before);
    edge_to_.push_back(after);
}

namespace {
void csr(int64_t n,
         const std::vector<int32_t>& from,
         const std::vector<int32_t>& to,
         std::vector<int64_t>& first,
         std::vector<int32_t>& list) {
    assign_huge(first, static_cast<size_t>(n) + 1, int64_t{0});
    for (int32_t f : from) ++first[f + 1];
    for (int64_t i = 0; i < n; ++i) first[i + 1] += first[i];
    reserve_huge(list, from.size());
    list.resize(from.size());
    // Filled from the back, first[f + 1] (f's end) stepping down to f's start, so each task's list keeps
    // the edges' order without a cursor array (as large as first); then first moves down by one.
    for (size_t e = from.size(); e-- > 0;) list[--first[from[e] + 1]] = to[e];
    std::copy(first.begin() + 1, first.end(), first.begin());
    first[n] = static_cast<int64_t>(from.size());
}
}  // namespace

void TaskGraph::finalize() {
    if (finalized_) return;
    csr(num_tasks(), edge_from_, edge_to_, succ_first_, succ_);
    std::vector<int32_t>().swap(edge_from_);
    std::vector<int32_t>().swap(edge_to_);
    finalized_ = true;
}

void TaskGraph::predecessors(std::vector<int64_t>& first, std::vector<int32_t>& list) const {
    if (!finalized_) return csr(num_tasks(), edge_to_, edge_from_, first, list);
    std::vector<int32_t> from(succ_.size());
    for (int64_t t = 0; t < num_tasks(); ++t)
        for (int64_t e = succ_first_[t]; e < succ_first_[t + 1]; ++e) from[e] = static_cast<int32_t>(t);
    csr(num_tasks(), succ_, from, first, list);
}

std::vector<double> TaskGraph::link_load_bytes(const Network& network) const {
    std::vector<double> load(static_cast<size_t>(network.num_links()), 0.0);
    std::vector<int32_t> route;
    for (int64_t t = 0; t < num_tasks(); ++t) {
        if (kind_[t] == TaskKind::transfer) {
            route.clear();
            network.route(rank_[t], peer_[t], route);
            const double eff_bytes = amount_[t] / network.efficiency(amount_[t]);
            for (int32_t l : route) load[l] += eff_bytes;
        } else if (kind_[t] == TaskKind::bundle) {
            const Bundle& b = bundles_[peer_[t]];
            for (int h = 0; h < b.num_hops; ++h) {
                const HopRun& run = bundle_hops_[b.hop_begin + h];
                for (int32_t l = run.link; l < run.link + run.num_links; ++l)
                    load[l] += b.effective_bytes * run.share;
            }
        }
    }
    return load;
}

int64_t peak_rss_bytes() {
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
}

// One run of the executor; a struct so the event handlers share state without a long parameter list.
struct SimRun {
    const TaskGraph& g;
    const Network& net;
    const SimOptions& opt;
    SimResult& res;
    FlowSim flows;
    std::vector<int64_t> own_succ_first;  // the successor CSR when the graph is not finalized
    std::vector<int32_t> own_succ;
    const int64_t* succ_first = nullptr;
    const int32_t* succ = nullptr;
    std::vector<int32_t> pending;
    std::vector<double> device_free_s;
    // Shared cores (Network::shares_cores): compute tasks are flows of FLOPs over [the rank's cap
    // (rank_max_flops_per_s), its host's pool (host_flops_per_s)], max-min fair, in a flow simulation of
    // their own (no link is shared with the network, so the two solve independently); a device still runs one
    // task at a time, the others wait in ready order.
    std::vector<NetLink> cpu_links;
    std::unique_ptr<FlowSim> cpu;
    std::vector<int32_t> device_task;  // [ranks] the compute task on the device, -1 = idle
    std::vector<std::vector<int32_t>> device_queue;
    std::vector<size_t> device_queue_head;
    std::vector<FlowDone> cpu_done;
    // Event heap: (time, task); a transfer's entry is its α expiry, others their end.
    using Event = std::pair<double, int32_t>;
    std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
    // α expiries: a message's α is one of a few values and tasks start in time order, so the expiries
    // of each α arrive sorted and queue in a FIFO per α instead of the heap (which cost half of the
    // executor's time at 4,096 ranks); one that would arrive out of order goes to the heap.
    struct AlphaQueue {
        double alpha_s;
        std::vector<Event> items;
        size_t head = 0;
    };
    std::vector<AlphaQueue> alpha_queues;
    std::vector<int32_t> ready;       // tasks whose predecessors have all ended, to start now
    std::vector<int32_t> joins_done;  // zero-time tasks started, to end now
    bool draining = false;
    std::vector<FlowHop> hop_scratch;
    std::vector<int32_t> route_scratch;
    std::vector<FlowDone> done;
    std::vector<int32_t> to_activate;
    // NIC port groups (node × direction: egress [0, N), ingress [N, 2N)) that only bundles spread evenly
    // over all the node's ports cross: those ports load equally at every instant, so port 0 alone stands
    // for the group in the flow simulation (exact; link bytes come from the graph).
    int nic_ports = 1;
    int32_t nic_egress0 = 0, nic_ingress0 = 0;
    std::vector<uint8_t> pooled;
    std::vector<int32_t> link_group;  // [links] nic_group() of each link (a division per hop otherwise)

    SimRun(const TaskGraph& graph, const Network& network, const SimOptions& options, SimResult& result)
        : g(graph), net(network), opt(options), res(result), flows(network.links()) {}

    void start(int32_t t, double now) {
        res.start_s[t] = now;
        switch (g.kind_[t]) {
            case TaskKind::compute: {
                const int r = g.rank_[t];
                if (cpu) {
                    if (device_task[r] >= 0)
                        device_queue[r].push_back(t);
                    else
                        begin_shared_compute(t, now);
                    break;
                }
                const double begin = std::max(now, device_free_s[r]);
                const double duration = g.amount_[t] / net.device_flops_per_s();
                res.start_s[t] = begin;
                device_free_s[r] = begin + duration;
                res.rank_compute_s[r] += duration;
                events.emplace(begin + duration, t);
                break;
            }
            case TaskKind::delay:
                if (g.amount_[t] == 0)
                    joins_done.push_back(t);  // finished by drain(): chains of joins must not recurse
                else
                    events.emplace(now + g.amount_[t], t);
                break;
            case TaskKind::transfer:
                push_expiry(net.latency_s(g.rank_[t], g.peer_[t]), now, t);
                break;
            case TaskKind::bundle:
                push_expiry(g.bundle_latencies_[g.bundles_[g.peer_[t]].latency], now, t);
                break;
        }
    }

    void begin_shared_compute(int32_t t, double now) {
        const int r = g.rank_[t];
        now = std::max(now, cpu->now_s());  // later only under a rate window (flows ended early)
        res.start_s[t] = now;
        if (!(g.amount_[t] > 0)) {  // nothing to compute: ends at once, the device stays free
            events.emplace(now, t);
            return;
        }
        device_task[r] = t;
        const FlowHop hops[2] = {{r, 1.0f}, {net.num_ranks() + r / net.ranks_per_host(), 1.0f}};
        cpu->start(t, g.amount_[t], 1.0, hops, 2);
    }
    // A shared-cores compute task has ended: its device takes the next waiting one.
    void end_shared_compute(int32_t t, double now) {
        const int r = g.rank_[t];
        res.rank_compute_s[r] += now - res.start_s[t];
        device_task[r] = -1;
        finish(t, now);
        if (device_task[r] < 0 && device_queue_head[r] < device_queue[r].size()) {
            begin_shared_compute(device_queue[r][device_queue_head[r]++], now);
            drain();
        }
    }
    // Moves the shared-cores flows to t, ending those done by then (they end by t at the latest, since
    // the caller never passes their next completion).
    void advance_cpu(double t) {
        if (!cpu) return;
        cpu_done.clear();
        cpu->advance_to(t, cpu_done);
        for (const FlowDone& d : cpu_done) end_shared_compute(static_cast<int32_t>(d.id), d.finish_s);
    }
    void setup_shared_cores() {
        if (!net.shares_cores()) return;
        const int P = net.num_ranks(), R = net.ranks_per_host();
        const int hosts = (P + R - 1) / R;
        cpu_links.assign(static_cast<size_t>(P), NetLink{net.rank_max_flops_per_s(), LinkClass::intra});
        cpu_links.insert(cpu_links.end(), static_cast<size_t>(hosts),
                         NetLink{net.host_flops_per_s(), LinkClass::intra});
        cpu = std::make_unique<FlowSim>(cpu_links);
        device_task.assign(static_cast<size_t>(P), -1);
        device_queue.assign(static_cast<size_t>(P), {});
        device_queue_head.assign(static_cast<size_t>(P), 0);
    }

    void push_expiry(double alpha_s, double now, int32_t t) {
        const Event e{now + alpha_s, t};
        for (AlphaQueue& q : alpha_queues)
            if (q.alpha_s == alpha_s) {
                // Sorted by time only: tasks ready at one instant start in any id order, and the
                // expiries of one instant are activated together anyway.
                if (q.head == q.items.size() || e.first >= q.items.back().first) {
                    q.items.push_back(e);
                    return;
                }
                events.push(e);
                return;
            }
        if (alpha_queues.size() < 8) {
            alpha_queues.push_back(AlphaQueue{alpha_s, {e}, 0});
            return;
        }
        events.push(e);
    }
    // The earliest pending event (time +inf when none) and, when `pop`, removes it.
    Event next_event(bool pop) {
        AlphaQueue* best = nullptr;
        Event e{std::numeric_limits<double>::infinity(), -1};
        if (!events.empty()) e = events.top();
        for (AlphaQueue& q : alpha_queues)
            if (q.head < q.items.size() && q.items[q.head].first < e.first) {
                e = q.items[q.head];
                best = &q;
            }
        if (!pop) return e;
        if (best) {
            if (++best->head == best->items.size()) {
                best->items.clear();
                best->head = 0;
            }
        } else if (!events.empty()) {
            events.pop();
        }
        return e;
    }

    // α has passed: the bytes start to move.
    void activate(int32_t t) {
        ++res.num_events;
        if (g.kind_[t] == TaskKind::transfer) {
            route_scratch.clear();
            net.route(g.rank_[t], g.peer_[t], route_scratch);
            hop_scratch.clear();
            for (int32_t l : route_scratch) hop_scratch.push_back(FlowHop{l, 1.0f});
            const double bytes = g.amount_[t] / net.efficiency(g.amount_[t]);
            flows.start(t, bytes, 1.0, hop_scratch.data(), static_cast<int>(hop_scratch.size()));
        } else {
            const TaskGraph::Bundle& b = g.bundles_[g.peer_[t]];
            hop_scratch.clear();
            for (int h = 0; h < b.num_hops; ++h) {
                const TaskGraph::HopRun& run = g.bundle_hops_[b.hop_begin + h];
                const int32_t end = run.link + run.num_links;
                for (int32_t l = run.link; l < end;) {
                    const int group = nic_group(l);
                    hop_scratch.push_back(FlowHop{l, run.share});
                    l += group >= 0 && pooled[group] && covers_group(l, end, group) ? nic_ports : 1;
                }
            }
            flows.start(t, b.effective_bytes, b.weight, hop_scratch.data(),
                        static_cast<int>(hop_scratch.size()));
        }
    }

    int nic_group(int32_t l) const { return link_group[l]; }
    int nic_group_of(int32_t l) const {
        const int N = net.num_nodes();
        if (l >= nic_egress0 && l < nic_egress0 + N * nic_ports) return (l - nic_egress0) / nic_ports;
        if (l >= nic_ingress0 && l < nic_ingress0 + N * nic_ports) return N + (l - nic_ingress0) / nic_ports;
        return -1;
    }
    // Whether the run [l, end) covers all of `group`'s ports from l on (l its first port).
    bool covers_group(int32_t l, int32_t end, int group) const {
        const int N = net.num_nodes();
        const int32_t first =
            group < N ? nic_egress0 + group * nic_ports : nic_ingress0 + (group - N) * nic_ports;
        return l == first && end - l >= nic_ports;
    }

    void find_pooled_groups() {
        nic_ports = net.nic_ports_per_node();
        nic_egress0 = net.nic_egress_link(0, 0);
        nic_ingress0 = net.nic_ingress_link(0, 0);
        pooled.assign(2 * static_cast<size_t>(net.num_nodes()), nic_ports > 1 ? 1 : 0);
        link_group.resize(static_cast<size_t>(net.num_links()));
        for (int32_t l = 0; l < net.num_links(); ++l) link_group[l] = nic_group_of(l);
        if (nic_ports == 1) return;
        const NodeMap& map = net.node_map();
        for (int64_t t = 0; t < g.num_tasks(); ++t) {
            if (g.kind_[t] == TaskKind::transfer) {
                const int a = map.node_of_rank[g.rank_[t]], b = map.node_of_rank[g.peer_[t]];
                if (a != b) pooled[a] = pooled[net.num_nodes() + b] = 0;
            } else if (g.kind_[t] == TaskKind::bundle) {
                const TaskGraph::Bundle& b = g.bundles_[g.peer_[t]];
                for (int h = 0; h < b.num_hops; ++h) {
                    const TaskGraph::HopRun& run = g.bundle_hops_[b.hop_begin + h];
                    const int32_t end = run.link + run.num_links;
                    for (int32_t l = run.link; l < end;) {
                        const int group = nic_group(l);
                        if (group >= 0 && covers_group(l, end, group)) {
                            l += nic_ports;
                            continue;
                        }
                        if (group >= 0) pooled[group] = 0;
                        ++l;
                    }
                }
            }
        }
    }

    void finish(int32_t t, double now) {
        finish_only(t, now);
        drain();
    }

    // Ends t and queues the successors that became ready.
    void finish_only(int32_t t, double now) {
        ++res.num_events;
        res.end_s[t] = now;
        res.makespan_s = std::max(res.makespan_s, now);
        for (int64_t e = succ_first[t]; e < succ_first[t + 1]; ++e) {
            const int32_t next = succ[e];
            // Batched rate updates report flows out of time order: a task is ready at its predecessors'
            // latest end, not at the end that happened to be processed last.
            res.start_s[next] = std::max(res.start_s[next], now);  // the ready time until it starts
            if (--pending[next] == 0) ready.push_back(next);
        }
    }

    // Starts every ready task and ends every join that became due, until neither is left.
    void drain() {
        if (draining) return;
        draining = true;
        while (!ready.empty() || !joins_done.empty()) {
            if (!joins_done.empty()) {
                const int32_t t = joins_done.back();
                joins_done.pop_back();
                finish_only(t, res.start_s[t]);
                continue;
            }
            const int32_t next = ready.back();
            ready.pop_back();
            start(next, res.start_s[next]);
        }
        draining = false;
    }

    void run() {
        const int64_t T = g.num_tasks();
        if (!g.finalized_) csr(T, g.edge_from_, g.edge_to_, own_succ_first, own_succ);
        succ_first = g.finalized_ ? g.succ_first_.data() : own_succ_first.data();
        succ = g.finalized_ ? g.succ_.data() : own_succ.data();
        assign_huge(pending, static_cast<size_t>(T), 0);
        for (int64_t e = 0; e < succ_first[T]; ++e) ++pending[succ[e]];
        device_free_s.assign(static_cast<size_t>(net.num_ranks()), 0.0);
        assign_huge(res.start_s, static_cast<size_t>(T), 0.0);
        assign_huge(res.end_s, static_cast<size_t>(T), -1.0);
        res.rank_compute_s.assign(static_cast<size_t>(net.num_ranks()), 0.0);
        find_pooled_groups();
        setup_shared_cores();
        for (int32_t t = 0; t < T; ++t)
            if (pending[t] == 0) ready.push_back(t);
        drain();
        const double inf = std::numeric_limits<double>::infinity();
        while (true) {
            const double t_event = next_event(false).first;
            const double t_flow = flows.next_completion_s();
            const double t_cpu = cpu ? cpu->next_completion_s() : inf;
            if (t_event == inf && t_flow == inf && t_cpu == inf) break;
            if (t_cpu < t_flow && t_cpu < t_event) {
                advance_cpu(t_cpu);
                continue;
            }
            if (t_flow <= t_event) {
                // The window is a fraction of the time to the next completion, never of absolute time:
                // a window growing with t would compound along long dependency chains.
                const double until =
                    std::min({t_event, t_cpu, t_flow + opt.rate_window * (t_flow - flows.now_s())});
                advance_cpu(until);
                done.clear();
                flows.advance_to(until, done);
                for (const FlowDone& d : done) finish(static_cast<int32_t>(d.id), d.finish_s);
                continue;
            }
            // Every event due at t_event: compute and delay ends; flows whose α expires now start together,
            // so the rates are recomputed once per instant. (Flows finished within a rate window may have
            // queued α expiries slightly in the past: they start now.)
            const double batch_end = t_event;
            advance_cpu(batch_end);
            double start_at = flows.now_s();
            to_activate.clear();
            while (next_event(false).first <= batch_end) {
                const auto [time, t] = next_event(true);
                const TaskKind kind = g.kind_[t];
                if (kind == TaskKind::transfer || kind == TaskKind::bundle) {
                    to_activate.push_back(t);
                    start_at = std::max(start_at, time);
                } else {
                    finish(t, time);
                }
            }
            if (to_activate.empty()) continue;
            done.clear();
            flows.advance_to(start_at, done);  // only flows due within rounding of start_at end here
            for (const FlowDone& d : done) finish(static_cast<int32_t>(d.id), d.finish_s);
            for (int32_t t : to_activate) activate(t);
        }
        for (int64_t t = 0; t < T; ++t) EXPAR_ASSERT(res.end_s[t] >= 0);  // the graph has no cycle
    }
};

SimResult simulate(const TaskGraph& graph, const Network& network, const SimOptions& options) {
    const double wall0_s = now_s();
    SimResult result;
    {
        SimRun run(graph, network, options, result);
        run.run();
        // Every flow completed, so the graph's link loads are the bytes carried (pooled ports included).
        result.link_bytes = graph.link_load_bytes(network);
        result.num_rate_computations = run.flows.num_rate_computations();
        result.num_partial_rate_computations = run.flows.num_partial_computations();
        for (uint8_t pooled : run.pooled) result.num_pooled_nic_groups += pooled;
        result.peak_active_flows = run.flows.peak_active();
    }
    const std::vector<NetLink>& links = network.links();
    for (size_t l = 0; l < links.size(); ++l) {
        result.class_bytes[static_cast<int>(links[l].link_class)] += result.link_bytes[l];
        const double u =
            result.makespan_s > 0 ? result.link_bytes[l] / (links[l].capacity_Bps * result.makespan_s) : 0;
        if (result.link_bytes[l] > 0 && u > result.busiest_link_utilisation) {
            result.busiest_link_utilisation = u;
            result.busiest_link = static_cast<int>(l);
        }
    }
    result.wall_s = now_s() - wall0_s;
    result.events_per_s = result.wall_s > 0 ? result.num_events / result.wall_s : 0;
    result.peak_rss_bytes = peak_rss_bytes();
    return result;
}

std::vector<int32_t> critical_path(const TaskGraph& graph, const SimResult& result, int32_t last) {
    std::vector<int64_t> first;
    std::vector<int32_t> preds;
    graph.predecessors(first, preds);
    std::vector<int32_t> path;
    int32_t t = last;
    while (t >= 0) {
        path.push_back(t);
        int32_t best = -1;
        double best_end = -1;
        for (int64_t e = first[t]; e < first[t + 1]; ++e)
            if (result.end_s[preds[e]] > best_end) {
                best_end = result.end_s[preds[e]];
                best = preds[e];
            }
        // A compute task that started after all its predecessors waited for its device.
        if (graph.kind(t) == TaskKind::compute && result.start_s[t] > best_end * (1 + 1e-12) + 1e-15) {
            for (int32_t u = 0; u < graph.num_tasks(); ++u)
                if (u != t && graph.kind(u) == TaskKind::compute && graph.rank(u) == graph.rank(t) &&
                    std::abs(result.end_s[u] - result.start_s[t]) <= 1e-12 * result.start_s[t]) {
                    best = u;
                    break;
                }
        }
        t = best;
    }
    std::reverse(path.begin(), path.end());
    return path;
}

}  // namespace expar
