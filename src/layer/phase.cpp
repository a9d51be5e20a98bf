#include "phase.h"

#include <string>

namespace expar {

std::string simulated_phase_names() {
    std::string names;
    for (int p = 0; p < kNumPhases; ++p)
        names += std::string(p ? "," : "") + to_string(simulated_phase(Phase(p)));
    return names;
}

}  // namespace expar
