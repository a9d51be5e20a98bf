// An append-only HDF5 log whose datasets are listed once, as a table of fields: each field gives its
// dataset path, the shape of one row, its units (and any other string attributes) and how to fill its row
// from a record of one step (Row). The same table creates the datasets (H5Table, h5_file.h: extendible,
// 64 rows a chunk) and appends one row to each. A field's dtype follows its fill function: one writing
// double* is float64, one writing int64_t* is int64. A per-rank field is filled on every rank from that
// rank's record and gathered to rank 0 (as doubles: integers exact below 2^53): its rows are [P, dims...].
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "check.h"
#include "comm.h"
#include "h5_file.h"

namespace expar {

// Marks a field as per rank: H5LogField(kPerRank, path, ...).
struct H5PerRank {};
constexpr H5PerRank kPerRank{};

template <class Row>
struct H5LogField {
    using FillF64 = std::function<void(const Row&, double*)>;
    using FillI64 = std::function<void(const Row&, int64_t*)>;
    using Attributes = std::vector<std::pair<std::string, std::string>>;

    // fill(row, out) writes one row: the product of row_dims values (one for a scalar, row_dims = {}).
    template <class Fill>
    H5LogField(std::string path,
               std::vector<hsize_t> row_dims,
               std::string units,
               Fill fill,
               Attributes attributes = {})
        : path(std::move(path)),
          row_dims(std::move(row_dims)),
          units(std::move(units)),
          attributes(std::move(attributes)) {
        constexpr bool f64_fill = std::is_invocable_v<Fill, const Row&, double*>;
        constexpr bool i64_fill = std::is_invocable_v<Fill, const Row&, int64_t*>;
        static_assert(f64_fill != i64_fill,
                      "a log field's fill takes (const Row&, double*) or (const Row&, int64_t*)");
        if constexpr (f64_fill)
            f64 = std::move(fill);
        else
            i64 = std::move(fill);
    }
    // Per rank: row_dims are one rank's; the dataset's rows are [P, row_dims...].
    template <class Fill>
    H5LogField(H5PerRank,
               std::string path,
               std::vector<hsize_t> row_dims,
               std::string units,
               Fill fill,
               Attributes attributes = {})
        : H5LogField(std::move(path),
                     std::move(row_dims),
                     std::move(units),
                     std::move(fill),
                     std::move(attributes)) {
        per_rank = true;
    }

    std::string path;
    std::vector<hsize_t> row_dims;
    std::string units;  // the "units" attribute; empty = none
    Attributes attributes;
    FillF64 f64;  // exactly one of f64, i64 is set
    FillI64 i64;
    bool per_rank = false;
};

template <class Row>
class H5LogTable {
   public:
    using Field = H5LogField<Row>;

    // file: the open log on rank 0, null on other ranks (which only fill per-rank fields). comm: needed only
    // with per-rank fields. Creates every dataset, empty, with its attributes.
    H5LogTable(H5File* file, std::vector<Field> fields, Comm* comm = nullptr) : file_(file), comm_(comm) {
        const hsize_t P = comm ? static_cast<hsize_t>(comm->size()) : 1;
        for (Field& field : fields) {
            Column c(std::move(field));
            c.count = 1;
            for (hsize_t n : c.field.row_dims) c.count *= n;
            std::vector<hsize_t> dims = c.field.row_dims;
            if (c.field.per_rank) {
                EXPAR_ASSERT(comm != nullptr);
                dims.insert(dims.begin(), P);
                c.offset = rank_width_;
                rank_width_ += c.count;
            }
            const size_t rows = c.count * (c.field.per_rank ? P : 1);
            if (c.field.f64) c.f64.resize(rows);
            if (c.field.i64) c.i64.resize(rows);
            if (file_) {
                c.table = std::make_unique<H5Table>(*file_, c.field.path, dims,
                                                    c.field.f64 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64,
                                                    c.field.units);
                for (const auto& [name, value] : c.field.attributes) file_->attr(name, value, c.field.path);
            }
            columns_.push_back(std::move(c));
        }
        mine_.resize(rank_width_);
        gathered_.resize(file_ ? P * rank_width_ : 0);
    }

    // One row in every dataset. Collective when there are per-rank fields; otherwise a no-op off rank 0.
    void append(const Row& row) {
        if (rank_width_ > 0) {
            for (Column& c : columns_) {
                if (!c.field.per_rank) continue;
                double* out = mine_.data() + c.offset;
                if (c.field.f64) {
                    c.field.f64(row, out);
                } else {
                    c.field.i64(row, c.i64.data());  // the first rank's slot serves as scratch
                    for (size_t i = 0; i < c.count; ++i) out[i] = static_cast<double>(c.i64[i]);
                }
            }
            comm_->gather_f64(mine_.data(), gathered_.data(), static_cast<int64_t>(rank_width_), 0);
        }
        if (!file_) return;
        for (Column& c : columns_) {
            if (c.field.per_rank) {
                const size_t P = gathered_.size() / rank_width_;
                for (size_t r = 0; r < P; ++r)
                    for (size_t i = 0; i < c.count; ++i) {
                        const double value = gathered_[r * rank_width_ + c.offset + i];
                        if (c.field.f64)
                            c.f64[r * c.count + i] = value;
                        else
                            c.i64[r * c.count + i] = static_cast<int64_t>(value);
                    }
            } else if (c.field.f64) {
                c.field.f64(row, c.f64.data());
            } else {
                c.field.i64(row, c.i64.data());
            }
            c.table->append(c.field.f64 ? static_cast<const void*>(c.f64.data()) : c.i64.data());
        }
    }

   private:
    struct Column {
        explicit Column(Field f) : field(std::move(f)) {}
        Field field;
        std::unique_ptr<H5Table> table;  // rank 0 only
        std::vector<double> f64;         // one row: count values, or P x count for a per-rank field
        std::vector<int64_t> i64;
        size_t count = 1;   // values in one (one rank's) row
        size_t offset = 0;  // per rank: where its values sit in a rank's gathered row
    };
    H5File* file_;
    Comm* comm_;
    std::vector<Column> columns_;
    size_t rank_width_ = 0;  // doubles each rank contributes per append
    std::vector<double> mine_, gathered_;
};

}  // namespace expar
