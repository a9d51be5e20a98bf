// The MoE layer's phases under one set of names, as the layer times them (LayerStepStats) and as the
// simulator predicts them. The simulator reports 8 of the layer's 10: it folds the count exchange into
// route and the layout into dispatch (planning is not modelled on its own); simulated_phase() says where
// each layer phase goes, and logs carry that map so that measured and predicted phases can be compared.
#pragma once

#include <cstdint>
#include <string>

#include "enum_names.h"

namespace expar {

enum Phase : int {
    kFwdRoute,
    kFwdCountExchange,
    kFwdLayout,
    kFwdDispatch,
    kFwdExpert,
    kFwdCombine,
    kBwdCombine,
    kBwdExpert,
    kBwdDispatch,
    kBwdRoute,
    kNumPhases
};
inline const auto& enum_names(Phase) {
    static constexpr EnumName<Phase> names[] = {
        {kFwdRoute, "forward/route"},        {kFwdCountExchange, "forward/count_exchange"},
        {kFwdLayout, "forward/layout"},      {kFwdDispatch, "forward/dispatch"},
        {kFwdExpert, "forward/expert"},      {kFwdCombine, "forward/combine"},
        {kBwdCombine, "backward/combine"},   {kBwdExpert, "backward/expert"},
        {kBwdDispatch, "backward/dispatch"}, {kBwdRoute, "backward/route"}};
    return names;
}

enum SimPhase : uint8_t {
    kSimFwdRoute,
    kSimFwdDispatch,
    kSimFwdExpert,
    kSimFwdCombine,
    kSimBwdCombine,
    kSimBwdExpert,
    kSimBwdDispatch,
    kSimBwdRoute,
    kNumSimPhases
};
inline const auto& enum_names(SimPhase) {
    static constexpr EnumName<SimPhase> names[] = {
        {kSimFwdRoute, "forward/route"},        {kSimFwdDispatch, "forward/dispatch"},
        {kSimFwdExpert, "forward/expert"},      {kSimFwdCombine, "forward/combine"},
        {kSimBwdCombine, "backward/combine"},   {kSimBwdExpert, "backward/expert"},
        {kSimBwdDispatch, "backward/dispatch"}, {kSimBwdRoute, "backward/route"}};
    return names;
}

// The simulator's phase that holds layer phase p.
constexpr SimPhase simulated_phase(Phase p) {
    constexpr SimPhase kOf[kNumPhases] = {kSimFwdRoute,    kSimFwdRoute,   kSimFwdDispatch, kSimFwdDispatch,
                                          kSimFwdExpert,   kSimFwdCombine, kSimBwdCombine,  kSimBwdExpert,
                                          kSimBwdDispatch, kSimBwdRoute};
    return kOf[p];
}

// For each layer phase, the name of its simulated phase: the fold, as a log attribute.
std::string simulated_phase_names();

}  // namespace expar
