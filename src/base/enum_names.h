// Names of enum values, written once: each enum has one table of {value, name, help} next to its
// declaration, found by argument-dependent lookup:
//
//     enum class DropPolicy { position, probs };
//     inline const auto& enum_names(DropPolicy) {
//         static constexpr EnumName<DropPolicy> names[] = {{DropPolicy::position, "position"}, ...};
//         return names;
//     }
//
// to_string(), parse_enum_name() / parse_enum(), the --help text and the "expected a, b or c" list of an
// error all read that table; enum_option.h makes Boost.Program_options parse options of the enum type through
// it. The first entry of a value is its name; later entries of the same value would be accepted aliases.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "check.h"

namespace expar {

template <class E>
struct EnumName {
    E value;
    const char* name;
    const char* help = nullptr;  // shown in --help after the name, in parentheses; nullptr = none
};

// Enums with a table: EnumTable<E> names its type; templates below take part only for such enums.
template <class E>
using EnumTable = decltype(enum_names(E{}));

// The name of value: the first table entry that has it ("?" for a value outside the table).
template <class E, class = EnumTable<E>>
const char* to_string(E value) {
    for (const EnumName<E>& entry : enum_names(E{}))
        if (entry.value == value) return entry.name;
    return "?";
}

// The value named `name`; false (and *value unchanged) for a name outside the table.
template <class E, class = EnumTable<E>>
bool parse_enum_name(const std::string& name, E* value) {
    for (const EnumName<E>& entry : enum_names(E{}))
        if (name == entry.name) {
            *value = entry.value;
            return true;
        }
    return false;
}

// The accepted names for an error message: "a, b or c".
template <class E, class = EnumTable<E>>
std::string enum_name_list() {
    const auto& names = enum_names(E{});
    const size_t count = std::extent<std::remove_reference_t<decltype(names)>>::value;
    std::string out;
    for (size_t i = 0; i < count; ++i)
        out += std::string(i == 0 ? "" : i + 1 == count ? " or " : ", ") + names[i].name;
    return out;
}

// Every name in table order, comma-separated ("a,b,c"): the `phases`-style attributes of the logs.
template <class E, class = EnumTable<E>>
std::string enum_name_csv() {
    std::string out;
    for (const EnumName<E>& entry : enum_names(E{})) out += std::string(out.empty() ? "" : ",") + entry.name;
    return out;
}

// The value named `name`; throws an all-ranks expar::Error otherwise, in the style of the option errors:
// "unknown --schedule 'ring' (expected plain, pairwise or hierarchical)" for what = "--schedule".
template <class E, class = EnumTable<E>>
E parse_enum(const std::string& name, const std::string& what);

// The accepted names for --help, with their help: "a | b (what b does) | c".
template <class E, class = EnumTable<E>>
std::string enum_help() {
    std::string out;
    for (const EnumName<E>& entry : enum_names(E{})) {
        if (!out.empty()) out += " | ";
        out += entry.name;
        if (entry.help) out += std::string(" (") + entry.help + ")";
    }
    return out;
}

// A comma-separated list of names ("plain, mpi"): each value once, in the order first given. Throws an
// all-ranks expar::Error naming `what` on an unknown name or an empty list.
template <class E, class = EnumTable<E>>
std::vector<E> parse_enum_list(const std::string& text, const std::string& what) {
    std::vector<E> values;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (item.empty()) continue;
        const E value = parse_enum<E>(item, what);
        if (std::find(values.begin(), values.end(), value) == values.end()) values.push_back(value);
    }
    EXPAR_REQUIRE(!values.empty(), what << " lists nothing");
    return values;
}

template <class E, class>
E parse_enum(const std::string& name, const std::string& what) {
    E value{};
    if (!parse_enum_name(name, &value))
        EXPAR_FAIL("unknown " << what << " '" << name << "' (expected " << enum_name_list<E>() << ")");
    return value;
}

}  // namespace expar
