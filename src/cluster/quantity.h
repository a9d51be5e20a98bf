// Physical quantities written with their unit ("25 GB/s", "400 Gb/s", "2 us", "19.5 TFLOP/s", "64 MiB"),
// converted to expar's canonical units: bandwidth GB/s (1e9 bytes/s, one direction), time µs, compute rate
// GFLOP/s, size bytes. A bare number is an error: units are never guessed.
#pragma once

#include <string>

#include "enum_names.h"

namespace expar {

enum class QuantityKind { bandwidth, time, rate, size };
// Names for messages ("expected a bandwidth in ...").
inline const auto& enum_names(QuantityKind) {
    static constexpr EnumName<QuantityKind> names[] = {{QuantityKind::bandwidth, "bandwidth"},
                                                       {QuantityKind::time, "time"},
                                                       {QuantityKind::rate, "compute rate"},
                                                       {QuantityKind::size, "size"}};
    return names;
}

// The value of `text` in the canonical unit of `kind`. Throws an all-ranks expar::Error that starts with
// `where` (e.g. "topology/x.yaml:12: links.nic.bandwidth") on a missing, unknown or wrong-kind unit, or a
// text that is not a finite number. The sign is not checked here: callers state their own range.
double parse_quantity(const std::string& text, QuantityKind kind, const std::string& where);

}  // namespace expar
