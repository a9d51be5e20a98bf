#include "quantity.h"

#include <cmath>
#include <cstdlib>

#include "check.h"

namespace expar {

namespace {

struct Unit {
    const char* name;
    QuantityKind kind;
    double to_canonical;  // canonical units per one of this unit
};

// Case matters: "Gb/s" is gigabits, "GB/s" gigabytes. No "Gbps"/"GBps": they are easy to misread.
const Unit kUnits[] = {
    {"GB/s", QuantityKind::bandwidth, 1.0},
    {"MB/s", QuantityKind::bandwidth, 1e-3},
    {"TB/s", QuantityKind::bandwidth, 1e3},
    {"Gb/s", QuantityKind::bandwidth, 1.0 / 8},
    {"Mb/s", QuantityKind::bandwidth, 1e-3 / 8},
    {"Tb/s", QuantityKind::bandwidth, 1e3 / 8},
    {"GiB/s", QuantityKind::bandwidth, 1.073741824},
    {"MiB/s", QuantityKind::bandwidth, 1.048576e-3},
    {"ns", QuantityKind::time, 1e-3},
    {"us", QuantityKind::time, 1.0},
    {"µs", QuantityKind::time, 1.0},
    {"ms", QuantityKind::time, 1e3},
    {"s", QuantityKind::time, 1e6},
    {"MFLOP/s", QuantityKind::rate, 1e-3},
    {"GFLOP/s", QuantityKind::rate, 1.0},
    {"TFLOP/s", QuantityKind::rate, 1e3},
    {"PFLOP/s", QuantityKind::rate, 1e6},
    {"B", QuantityKind::size, 1.0},
    {"KB", QuantityKind::size, 1e3},
    {"MB", QuantityKind::size, 1e6},
    {"GB", QuantityKind::size, 1e9},
    {"KiB", QuantityKind::size, 1024.0},
    {"MiB", QuantityKind::size, 1048576.0},
    {"GiB", QuantityKind::size, 1073741824.0},
};

std::string units_of(QuantityKind kind) {
    std::string list;
    for (const Unit& unit : kUnits) {
        if (unit.kind != kind) continue;
        list += (list.empty() ? "" : ", ") + std::string(unit.name);
    }
    return list;
}

std::string trim(const std::string& s) {
    const size_t begin = s.find_first_not_of(" \t");
    if (begin == std::string::npos) return "";
    return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

}  // namespace

double parse_quantity(const std::string& text, QuantityKind kind, const std::string& where) {
    const std::string expected = std::string("expected a ") + to_string(kind) + " in " + units_of(kind);
    const std::string trimmed = trim(text);
    const char* begin = trimmed.c_str();
    char* end = nullptr;
    const double value = std::strtod(begin, &end);
    // strtod also reads "inf", "nan" and hex: accept plain decimal numbers only.
    const bool decimal = end != begin && trimmed.find_first_of("xXiInN") >= size_t(end - begin);
    if (!decimal || !std::isfinite(value))
        EXPAR_FAIL(where << ": '" << text << "' is not a number with a unit (" << expected << ")");
    const std::string unit_name = trim(end);
    if (unit_name.empty()) EXPAR_FAIL(where << ": '" << text << "' has no unit (" << expected << ")");
    for (const Unit& unit : kUnits) {
        if (unit_name != unit.name) continue;
        if (unit.kind != kind)
            EXPAR_FAIL(where << ": '" << text << "' is a " << to_string(unit.kind) << " (" << expected
                             << ")");
        return value * unit.to_canonical;
    }
    EXPAR_FAIL(where << ": unknown unit '" << unit_name << "' in '" << text << "' (" << expected << ")");
}

}  // namespace expar
