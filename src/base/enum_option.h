// Enum-valued command-line options: Boost.Program_options parses an option of an enum with a name table
// (enum_names.h) straight into the enum, through the validate() overload below, which Boost finds by
// argument-dependent lookup. A bad name fails with one line listing the valid ones:
//     unknown --gate 'top3' (expected topk, switch, gshard or noisy-topk)
// Declare such an option with enum_value(&target): its default is shown by name, and
// enum_option_text() gives the name of a parsed value back (for the HDF5 option attributes).
#pragma once

#include <boost/any.hpp>
#include <boost/program_options.hpp>
#include <map>
#include <string>
#include <typeindex>
#include <vector>

#include "enum_names.h"

namespace expar {

// A name outside an enum's table. Boost fills in the option's name when it stores the value.
class UnknownEnumName : public boost::program_options::error_with_option_name {
   public:
    UnknownEnumName(const std::string& name, const std::string& expected)
        : error_with_option_name("unknown --%option% '" + name + "' (expected " + expected + ")") {}
};

template <class E, class = EnumTable<E>>
void validate(boost::any& value, const std::vector<std::string>& tokens, E*, int) {
    namespace po = boost::program_options;
    po::validators::check_first_occurrence(value);
    const std::string& name = po::validators::get_single_string(tokens);
    E parsed{};
    if (!parse_enum_name(name, &parsed)) throw UnknownEnumName(name, enum_name_list<E>());
    value = parsed;
}

namespace detail {
using EnumTextFunction = std::string (*)(const boost::any&);
// The enum types declared with enum_value(), by type: how to name a value held in a boost::any.
inline std::map<std::type_index, EnumTextFunction>& enum_text_functions() {
    static std::map<std::type_index, EnumTextFunction> functions;
    return functions;
}
template <class E>
std::string enum_text(const boost::any& value) {
    return to_string(boost::any_cast<E>(value));
}
}  // namespace detail

// An enum option bound to *target, its current value the default (shown by name in --help).
template <class E, class = EnumTable<E>>
boost::program_options::typed_value<E>* enum_value(E* target) {
    detail::enum_text_functions()[std::type_index(typeid(E))] = &detail::enum_text<E>;
    return boost::program_options::value<E>(target)->default_value(*target, to_string(*target));
}

// The name of an enum option's value, as enum_value() declared it; false for any other type.
inline bool enum_option_text(const boost::any& value, std::string* text) {
    const auto& functions = detail::enum_text_functions();
    const auto it = functions.find(std::type_index(value.type()));
    if (it == functions.end()) return false;
    *text = it->second(value);
    return true;
}

}  // namespace expar
