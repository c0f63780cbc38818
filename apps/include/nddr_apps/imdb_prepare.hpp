#pragma once
/// \file
/// The logic of `nddr-prepare-imdb-wiki` (examples/nddr_prepare_imdb_wiki.cpp,
/// docs/data-imdb-wiki.md): from the official IMDB-WIKI metadata (`imdb.mat` / `wiki.mat`, read
/// with libmatio) and its JPEG images (decoded with libturbojpeg) to what `nddr-imdb-wiki` reads
/// (include/nddr/data/imdb_wiki.hpp): `train.txt` and `test.txt` with lines
/// `faces/<record>.png <age> <gender>` and the face crops as PNG under `faces/`.
///
/// Steps (formats-spec.md §5):
///   1. `read_imdb_mat`: the 1x1 struct `imdb` or `wiki`, its fields dob, photo_taken,
///      full_path, gender, face_location, face_score, second_face_score and, for the subject,
///      celeb_id (IMDB) or else name (Wikipedia). A missing field, a field of the wrong class or
///      length, or a record of the wrong type is an error naming the file, the field and the
///      record index.
///   2. `filter_records`: age = photo_taken - birth year, minus one when born in July or later
///      (the photo counts as taken on 1 July; YU4U's calc_age); kept iff face_score is finite
///      and >= min_face_score, second_face_score is NaN or <= max_second_face_score, age in
///      0..99 (the 100 classes nddr-imdb-wiki reads), gender 0 or 1, and the image file exists.
///   3. `split_subjects`: subjects (celeb_id, or name; a record without a name is a subject of
///      its own) shuffled with a seeded mt19937_64 and a
///      Fisher-Yates shuffle of our own (the same split on every platform); the first
///      round(test_fraction * subjects) (at least one) are the test subjects. No subject is in
///      both lists.
///   4. `crop_box`: the face box [x1 y1 x2 y2] (MATLAB, 1-based, inclusive) grown by `margin`
///      times its width / height on every side, rounded, made 0-based half-open and clipped to
///      the image. A face box that is not finite, empty, or entirely outside the image is an
///      error.
///   With `skip_corrupt` (--skip-corrupt), a record whose JPEG cannot be decoded or whose face
///   box is not inside its image is skipped instead: counted per reason in `Summary::skipped`
///   and listed in `skipped.tsv` (record, reason, source image, the error); without it the
///   first such record is an error naming it. A split left without a face is an error.
///   5. Everything is written into `<output>.partial.<pid>` (a sibling), which is renamed to the
///      output directory only when every record has been written; an error leaves no output.
///      An output directory that exists and is not empty is refused.
///
/// Needs libmatio, libturbojpeg and nddr::image_io (libpng).

#include <matio.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"
#include "nddr/io/png.hpp"

namespace nddr::apps::imdb_prep {

namespace fs = std::filesystem;

/// Largest JPEG file read, and largest decoded side.
inline constexpr std::uint64_t kMaxJpegBytes = std::uint64_t{64} << 20;
inline constexpr int kMaxJpegSide = 16384;
/// Ages nddr-imdb-wiki reads (0..kMaxAge).
inline constexpr int kMaxAge = 99;

/// The settings of one preparation (the program's flags).
struct PrepareOptions {
  std::string mat_path;
  std::string image_root;  ///< directory that full_path is relative to; "" = the .mat's
  std::string output_dir;
  double min_face_score = 1.0;
  double max_second_face_score = 0.0;
  double margin = 0.4;
  std::int64_t size = 224;
  double test_fraction = 0.16;  ///< 2,000 of 12,325 subjects in the paper
  std::int64_t seed = 0;
  bool skip_corrupt = false;  ///< skip undecodable JPEGs and bad face boxes (see the file comment)
};

/// The reasons `--skip-corrupt` skips a record for, as Summary::skipped and skipped.tsv name them.
inline constexpr const char* kSkipJpeg = "JPEG unreadable or corrupt";
inline constexpr const char* kSkipBox = "face box not inside the image";

/// One record of the metadata (index i of every field).
struct Record {
  std::int64_t index = 0;
  double dob = 0, photo_taken = 0, gender = 0, face_score = 0, second_face_score = 0;
  std::string full_path;
  std::string subject;  ///< "celeb_id:<n>" or "name:<text>"
  double box[4] = {0, 0, 0, 0};
  /// Why face_location is not 4 numbers (read_imdb_mat with `lenient_boxes`); empty when it is.
  std::string box_error;
};

/// The metadata of one .mat file.
struct Metadata {
  std::string variable;  ///< "imdb" or "wiki"
  std::string subject_field;  ///< "celeb_id" or "name"
  std::vector<Record> records;
};

namespace detail {

inline std::string& matio_message() {
  thread_local std::string message;
  return message;
}
inline void matio_log(int, char* message) { matio_message() = message ? message : ""; }

struct MatCloser {
  void operator()(mat_t* m) const { Mat_Close(m); }
};
struct VarFree {
  void operator()(matvar_t* v) const { Mat_VarFree(v); }
};

[[noreturn]] inline void fail(const std::string& file, std::string_view field,
                              std::optional<std::int64_t> record, const std::string& what) {
  std::ostringstream os;
  os << "'" << file << "'";
  if (record) os << " record " << *record;
  if (!field.empty()) os << " field '" << field << "'";
  os << ": " << what;
  throw IoError(os.str());
}

inline std::int64_t numel(const matvar_t* v) {
  if (v->rank < 1 || v->dims == nullptr) return 0;
  std::int64_t n = 1;
  for (int d = 0; d < v->rank; ++d) n *= static_cast<std::int64_t>(v->dims[d]);
  return n;
}

inline bool is_vector(const matvar_t* v) {
  int non_unit = 0;
  for (int d = 0; d < v->rank; ++d) non_unit += v->dims[d] != 1;
  return v->rank == 2 && non_unit <= 1;
}

inline const char* class_name(matio_classes c) {
  switch (c) {
    case MAT_C_CELL: return "cell";
    case MAT_C_STRUCT: return "struct";
    case MAT_C_CHAR: return "char";
    case MAT_C_DOUBLE: return "double";
    case MAT_C_SINGLE: return "single";
    case MAT_C_SPARSE: return "sparse";
    case MAT_C_FUNCTION: return "function";
    case MAT_C_OBJECT: return "object";
    default: return "integer";
  }
}

/// Element k of numeric variable v as a double; nullopt when v is not a real numeric array.
inline std::optional<std::vector<double>> numeric_values(const matvar_t* v) {
  if (v->isComplex || v->data == nullptr) {
    if (numel(v) == 0 && !v->isComplex) return std::vector<double>{};
    return std::nullopt;
  }
  const auto n = static_cast<std::size_t>(numel(v));
  std::vector<double> out(n);
  auto take = [&](auto tag) -> bool {
    using T = decltype(tag);
    if (v->data_size != static_cast<int>(sizeof(T)) || v->nbytes < n * sizeof(T)) return false;
    const T* p = static_cast<const T*>(v->data);
    for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<double>(p[k]);
    return true;
  };
  bool ok = false;
  switch (v->class_type) {
    case MAT_C_DOUBLE: ok = take(double{}); break;
    case MAT_C_SINGLE: ok = take(float{}); break;
    case MAT_C_INT8: ok = take(std::int8_t{}); break;
    case MAT_C_UINT8: ok = take(std::uint8_t{}); break;
    case MAT_C_INT16: ok = take(std::int16_t{}); break;
    case MAT_C_UINT16: ok = take(std::uint16_t{}); break;
    case MAT_C_INT32: ok = take(std::int32_t{}); break;
    case MAT_C_UINT32: ok = take(std::uint32_t{}); break;
    case MAT_C_INT64: ok = take(std::int64_t{}); break;
    case MAT_C_UINT64: ok = take(std::uint64_t{}); break;
    default: return std::nullopt;
  }
  if (!ok) return std::nullopt;
  return out;
}

/// A MATLAB char row as UTF-8; nullopt when v is not one (or holds a lone surrogate).
inline std::optional<std::string> char_row(const matvar_t* v) {
  const std::int64_t n = numel(v);
  if (n == 0) return std::string{};  // '' or [] (wiki.mat has [] for some names)
  if (v->class_type != MAT_C_CHAR) return std::nullopt;
  if (!is_vector(v) || v->data == nullptr) return std::nullopt;
  std::string out;
  const auto count = static_cast<std::size_t>(n);
  if (v->data_type == MAT_T_UINT8 || v->data_type == MAT_T_UTF8 || v->data_type == MAT_T_INT8) {
    if (v->nbytes < count) return std::nullopt;
    out.assign(static_cast<const char*>(v->data), count);
    return out;
  }
  if (v->data_type != MAT_T_UINT16 && v->data_type != MAT_T_UTF16) return std::nullopt;
  if (v->nbytes < count * 2) return std::nullopt;
  const auto* p = static_cast<const std::uint16_t*>(v->data);
  for (std::size_t k = 0; k < count; ++k) {
    std::uint32_t c = p[k];
    if (c >= 0xD800 && c < 0xDC00 && k + 1 < count && p[k + 1] >= 0xDC00 && p[k + 1] < 0xE000)
      c = 0x10000 + ((c - 0xD800) << 10) + (p[++k] - 0xDC00);
    else if (c >= 0xD800 && c < 0xE000)
      return std::nullopt;
    nddr::io::json::append_utf8(out, c);
  }
  return out;
}

}  // namespace detail

/// Reads the metadata of `path` (see the file comment); IoError naming the file, the field and
/// the record for anything that is not the official layout. With `lenient_boxes`
/// (--skip-corrupt), a face_location that is not 4 numbers is recorded in the record's
/// `box_error` instead.
inline Metadata read_imdb_mat(const std::string& path, bool lenient_boxes = false) {
  using detail::fail;
  {
    const io::RegularFile f = io::open_regular_file("nddr-prepare-imdb-wiki", path);
    (void)f;
  }
  Mat_LogInitFunc("nddr-prepare-imdb-wiki", detail::matio_log);
  detail::matio_message().clear();
  std::unique_ptr<mat_t, detail::MatCloser> mat(Mat_Open(path.c_str(), MAT_ACC_RDONLY));
  if (!mat)
    fail(path, "", std::nullopt,
         "not a MATLAB MAT-file matio can read" +
             (detail::matio_message().empty() ? "" : " (" + detail::matio_message() + ")"));
  Metadata meta;
  std::unique_ptr<matvar_t, detail::VarFree> top;
  for (const char* name : {"imdb", "wiki"}) {
    top.reset(Mat_VarRead(mat.get(), name));
    if (top) {
      meta.variable = name;
      break;
    }
  }
  if (!top)
    fail(path, "", std::nullopt,
         "has no readable variable 'imdb' or 'wiki' (the official imdb.mat / wiki.mat)" +
             (detail::matio_message().empty() ? "" : " (" + detail::matio_message() + ")"));
  const std::string var = meta.variable;
  if (top->class_type != MAT_C_STRUCT || detail::numel(top.get()) != 1)
    fail(path, var, std::nullopt,
         std::string("expected a 1x1 struct, got a ") + detail::class_name(top->class_type) +
             " with " + std::to_string(detail::numel(top.get())) + " elements");

  auto field = [&](const char* name, bool required) -> matvar_t* {
    matvar_t* f = Mat_VarGetStructFieldByName(top.get(), name, 0);
    if (!f && required)
      fail(path, var + "." + name, std::nullopt, "missing (or the file is truncated)");
    return f;
  };
  std::int64_t n = -1;
  auto check_length = [&](const matvar_t* f, const std::string& name) {
    const std::int64_t len = detail::numel(f);
    if (!detail::is_vector(f) && len != 0)
      fail(path, name, std::nullopt, "expected a 1xN row, got rank " + std::to_string(f->rank));
    if (n < 0) n = len;
    if (len != n)
      fail(path, name, std::nullopt,
           "has " + std::to_string(len) + " elements, expected " + std::to_string(n) +
               " (as the fields before it)");
  };
  auto numbers = [&](const char* name, bool required) -> std::optional<std::vector<double>> {
    const matvar_t* f = field(name, required);
    if (!f) return std::nullopt;
    const std::string full = var + "." + name;
    auto v = detail::numeric_values(f);
    if (!v)
      fail(path, full, std::nullopt,
           std::string("expected a real numeric row, got ") + detail::class_name(f->class_type) +
               (f->isComplex ? " (complex)" : ""));
    check_length(f, full);
    return v;
  };
  auto strings = [&](const char* name, bool required) -> std::optional<std::vector<std::string>> {
    matvar_t* f = field(name, required);
    if (!f) return std::nullopt;
    const std::string full = var + "." + name;
    if (f->class_type != MAT_C_CELL)
      fail(path, full, std::nullopt,
           std::string("expected a cell row of char, got ") + detail::class_name(f->class_type));
    check_length(f, full);
    std::vector<std::string> out(static_cast<std::size_t>(detail::numel(f)));
    for (std::size_t i = 0; i < out.size(); ++i) {
      const matvar_t* c = Mat_VarGetCell(f, static_cast<int>(i));
      const auto s = c ? detail::char_row(c) : std::nullopt;
      if (!s)
        fail(path, full, static_cast<std::int64_t>(i),
             std::string("expected a char row, got ") +
                 (c ? detail::class_name(c->class_type) : "nothing"));
      out[i] = *s;
    }
    return out;
  };

  const auto dob = numbers("dob", true);
  const auto photo_taken = numbers("photo_taken", true);
  const auto full_path = strings("full_path", true);
  const auto gender = numbers("gender", true);
  const auto face_score = numbers("face_score", true);
  const auto second = numbers("second_face_score", true);
  matvar_t* boxes = field("face_location", true);
  const std::string box_name = var + ".face_location";
  if (boxes->class_type != MAT_C_CELL)
    fail(path, box_name, std::nullopt,
         std::string("expected a cell row of 1x4 boxes, got ") +
             detail::class_name(boxes->class_type));
  check_length(boxes, box_name);
  std::optional<std::vector<double>> celeb_id;
  std::optional<std::vector<std::string>> names;
  if (field("celeb_id", false)) {
    celeb_id = numbers("celeb_id", true);
    meta.subject_field = "celeb_id";
  } else if (field("name", false)) {
    names = strings("name", true);
    meta.subject_field = "name";
  } else {
    fail(path, var + ".celeb_id", std::nullopt,
         "missing, and so is '" + var + ".name': no subject to split by");
  }

  meta.records.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    Record& r = meta.records[k];
    r.index = i;
    r.dob = (*dob)[k];
    r.photo_taken = (*photo_taken)[k];
    r.full_path = (*full_path)[k];
    r.gender = (*gender)[k];
    r.face_score = (*face_score)[k];
    r.second_face_score = (*second)[k];
    if (celeb_id) {
      const double id = (*celeb_id)[k];
      if (!std::isfinite(id) || id != std::floor(id))
        fail(path, var + ".celeb_id", i, "expected an integer id, got " + std::to_string(id));
      r.subject = "celeb_id:" + std::to_string(static_cast<long long>(id));
    } else {
      // A record without a name is a subject of its own (it cannot be matched to another).
      r.subject = (*names)[k].empty() ? "record:" + std::to_string(i) : "name:" + (*names)[k];
    }
    const matvar_t* c = Mat_VarGetCell(boxes, static_cast<int>(i));
    const auto box = c ? detail::numeric_values(c) : std::nullopt;
    if (!box || box->size() != 4) {
      const std::string what = std::string("expected 4 numbers [x1 y1 x2 y2], got ") +
                               (!c     ? "nothing"
                                : !box ? std::string("a ") + detail::class_name(c->class_type)
                                       : std::to_string(box->size()) + " numbers");
      if (!lenient_boxes) fail(path, box_name, i, what);
      r.box_error = "'" + path + "' record " + std::to_string(i) + " field '" + box_name +
                    "': " + what;
      continue;
    }
    std::copy(box->begin(), box->end(), r.box);
  }
  return meta;
}

/// Age on 1 July of the year the photo was taken (formats-spec.md §5.2); nullopt when dob or
/// photo_taken is not a usable number.
inline std::optional<int> age_of(double dob, double photo_taken) {
  if (!std::isfinite(dob) || !std::isfinite(photo_taken) || dob < 367 || dob > 1e7 ||
      photo_taken != std::floor(photo_taken) || std::abs(photo_taken) > 1e5)
    return std::nullopt;
  // MATLAB datenum - 366 = proleptic Gregorian ordinal (1 = 0001-01-01); days since 1970-01-01:
  const auto z0 = static_cast<std::int64_t>(std::floor(dob)) - 366 - 719163;
  // civil_from_days (H. Hinnant).
  const std::int64_t z = z0 + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const std::int64_t doe = z - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t year = yoe + era * 400 + (month <= 2);
  const auto age = static_cast<std::int64_t>(photo_taken) - year - (month >= 7 ? 1 : 0);
  if (age < -1000 || age > 1000) return std::nullopt;
  return static_cast<int>(age);
}

/// A record that passed the filters.
struct Kept {
  const Record* record = nullptr;
  int age = 0;
  int gender = 0;
  std::string image;  ///< image_root / full_path
};

/// Why records were dropped, in the order the filters run.
struct FilterCounts {
  std::map<std::string, std::int64_t> dropped;
  std::int64_t kept = 0;
};

/// Checks a full_path from the metadata: relative, no "..", no control characters.
inline void check_full_path(const std::string& mat, const Record& r, const std::string& var) {
  const fs::path p(r.full_path);
  bool ok = !r.full_path.empty() && p.is_relative();
  for (const auto& part : p) ok = ok && part != "..";
  for (const char ch : r.full_path) ok = ok && static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
  if (!ok)
    detail::fail(mat, var + ".full_path", r.index,
                 "expected a relative path without '..' or control characters, got '" +
                     io::excerpt(r.full_path) + "'");
}

/// Applies the filters of the file comment.
inline std::vector<Kept> filter_records(const Metadata& meta, const PrepareOptions& o,
                                        FilterCounts& counts) {
  const std::string root =
      o.image_root.empty() ? fs::path(o.mat_path).parent_path().string() : o.image_root;
  std::vector<Kept> kept;
  for (const Record& r : meta.records) {
    const char* reason = nullptr;
    const auto age = age_of(r.dob, r.photo_taken);
    if (!std::isfinite(r.face_score) || r.face_score < o.min_face_score)
      reason = "face_score not finite or below --min-face-score";
    else if (!std::isnan(r.second_face_score) && !(r.second_face_score <= o.max_second_face_score))
      reason = "second_face_score above --max-second-face-score";
    else if (!age)
      reason = "dob or photo_taken not a date";
    else if (*age < 0 || *age > kMaxAge)
      reason = "age outside 0..99";
    else if (r.gender != 0.0 && r.gender != 1.0)
      reason = "gender not 0 or 1";
    if (reason) {
      ++counts.dropped[reason];
      continue;
    }
    check_full_path(o.mat_path, r, meta.variable);
    const std::string image = (fs::path(root) / r.full_path).string();
    std::error_code ec;
    if (!fs::exists(image, ec)) {
      ++counts.dropped["image file missing"];
      continue;
    }
    kept.push_back({&r, *age, static_cast<int>(r.gender), image});
    ++counts.kept;
  }
  return kept;
}

/// Subject-disjoint split: the set of test subjects (see the file comment).
inline std::vector<std::string> split_subjects(const std::vector<Kept>& kept, double test_fraction,
                                               std::uint64_t seed) {
  std::vector<std::string> subjects;
  for (const Kept& k : kept) subjects.push_back(k.record->subject);
  std::sort(subjects.begin(), subjects.end());
  subjects.erase(std::unique(subjects.begin(), subjects.end()), subjects.end());
  check<ValueError>(subjects.size() >= 2, "nddr-prepare-imdb-wiki: ", subjects.size(),
                    " subject(s) left after filtering; a subject-disjoint split needs at least 2");
  std::mt19937_64 rng(seed);
  for (std::size_t i = subjects.size() - 1; i > 0; --i) std::swap(subjects[i], subjects[rng() % (i + 1)]);
  const auto s = static_cast<double>(subjects.size());
  auto n_test = static_cast<std::size_t>(std::floor(test_fraction * s + 0.5));
  n_test = std::clamp<std::size_t>(n_test, 1, subjects.size() - 1);
  subjects.resize(n_test);
  std::sort(subjects.begin(), subjects.end());
  return subjects;
}

/// A crop in 0-based pixel coordinates, half-open: columns [x0, x1), rows [y0, y1).
struct CropBox {
  std::int64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

/// The face box grown by `margin` and clipped to a width x height image; nullopt when the face
/// box is not finite, empty, or entirely outside the image.
inline std::optional<CropBox> crop_box(const double (&b)[4], double margin, int width, int height) {
  for (const double v : b)
    if (!std::isfinite(v) || std::abs(v) > 1e9) return std::nullopt;
  if (b[2] < b[0] || b[3] < b[1]) return std::nullopt;
  if (b[2] < 1 || b[3] < 1 || b[0] > width || b[1] > height) return std::nullopt;
  const double w = b[2] - b[0] + 1, h = b[3] - b[1] + 1;
  auto round = [](double v) { return static_cast<std::int64_t>(std::floor(v + 0.5)); };
  CropBox c{round(b[0] - margin * w) - 1, round(b[1] - margin * h) - 1, round(b[2] + margin * w),
            round(b[3] + margin * h)};
  c.x0 = std::clamp<std::int64_t>(c.x0, 0, width);
  c.y0 = std::clamp<std::int64_t>(c.y0, 0, height);
  c.x1 = std::clamp<std::int64_t>(c.x1, 0, width);
  c.y1 = std::clamp<std::int64_t>(c.y1, 0, height);
  if (c.x1 <= c.x0 || c.y1 <= c.y0) return std::nullopt;
  return c;
}

/// Decodes the JPEG at `path` to RGB; IoError naming the file for anything libturbojpeg reports
/// (warnings such as a truncated file included: nothing half-decoded is used).
inline io::Image8 read_jpeg(const std::string& path) {
  const std::vector<unsigned char> bytes =
      io::read_regular_file("nddr-prepare-imdb-wiki", path, kMaxJpegBytes);
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  check<IoError>(handle != nullptr, "nddr-prepare-imdb-wiki: libturbojpeg: ", tjGetErrorStr2(nullptr));
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  auto* data = const_cast<unsigned char*>(bytes.data());
  if (tjDecompressHeader3(handle.get(), data, bytes.size(), &width, &height, &subsamp,
                          &colorspace) != 0)
    throw IoError("'" + path + "': not a JPEG libturbojpeg can read (" +
                  tjGetErrorStr2(handle.get()) + ")");
  if (width < 1 || height < 1 || width > kMaxJpegSide || height > kMaxJpegSide)
    throw IoError("'" + path + "': JPEG is " + std::to_string(width) + "x" +
                  std::to_string(height) + ", expected sides in 1.." +
                  std::to_string(kMaxJpegSide));
  io::Image8 img;
  img.width = width;
  img.height = height;
  img.channels = 3;
  img.pixels.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  if (tjDecompress2(handle.get(), data, bytes.size(), img.pixels.data(), width, 0, height,
                    TJPF_RGB, TJFLAG_ACCURATEDCT) != 0)
    throw IoError("'" + path + "': corrupt or truncated JPEG (" + tjGetErrorStr2(handle.get()) +
                  ")");
  return img;
}

/// The crop of `img` resized to side x side (bilinear, pixel centres aligned as half-pixel).
inline io::Image8 crop_resize(const io::Image8& img, const CropBox& c, std::int64_t side) {
  io::Image8 out;
  out.width = out.height = static_cast<int>(side);
  out.channels = img.channels;
  out.pixels.resize(static_cast<std::size_t>(side * side * img.channels));
  const double cw = static_cast<double>(c.x1 - c.x0), ch = static_cast<double>(c.y1 - c.y0);
  const double sx = cw / static_cast<double>(side), sy = ch / static_cast<double>(side);
  for (std::int64_t r = 0; r < side; ++r) {
    const double fy = std::clamp((static_cast<double>(r) + 0.5) * sy - 0.5, 0.0, ch - 1);
    const auto y0 = static_cast<std::int64_t>(fy);
    const std::int64_t y1 = std::min<std::int64_t>(y0 + 1, c.y1 - c.y0 - 1);
    const double wy = fy - static_cast<double>(y0);
    for (std::int64_t q = 0; q < side; ++q) {
      const double fx = std::clamp((static_cast<double>(q) + 0.5) * sx - 0.5, 0.0, cw - 1);
      const auto x0 = static_cast<std::int64_t>(fx);
      const std::int64_t x1 = std::min<std::int64_t>(x0 + 1, c.x1 - c.x0 - 1);
      const double wx = fx - static_cast<double>(x0);
      for (int k = 0; k < img.channels; ++k) {
        auto at = [&](std::int64_t y, std::int64_t x) {
          return static_cast<double>(
              img.at(static_cast<int>(c.y0 + y), static_cast<int>(c.x0 + x), k));
        };
        const double v = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) +
                         wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
        out.at(static_cast<int>(r), static_cast<int>(q), k) =
            static_cast<std::uint8_t>(std::clamp(std::floor(v + 0.5), 0.0, 255.0));
      }
    }
  }
  return out;
}

/// What one preparation did.
struct Summary {
  std::int64_t records = 0, train = 0, test = 0, train_subjects = 0, test_subjects = 0;
  FilterCounts counts;
  std::string subject_field;
  std::map<std::string, std::int64_t> skipped;  ///< --skip-corrupt: records skipped, per reason
  std::int64_t skipped_total() const {
    std::int64_t n = 0;
    for (const auto& [reason, count] : skipped) n += count;
    return n;
  }
};

/// Refuses an output directory that exists and is not an empty directory.
inline void check_output_dir(const std::string& out) {
  std::error_code ec;
  const auto st = fs::symlink_status(out, ec);
  if (ec || st.type() == fs::file_type::not_found) return;
  check<IoError>(st.type() == fs::file_type::directory, "nddr-prepare-imdb-wiki: '", out,
                 "' exists and is not a directory; refusing to replace it");
  check<IoError>(fs::is_empty(out, ec) && !ec, "nddr-prepare-imdb-wiki: '", out,
                 "' exists and is not empty; refusing to overwrite it (remove it or choose ",
                 "another --output-dir)");
}

/// The whole preparation (see the file comment). `log` gets one line per step.
template <class Log>
Summary prepare(const PrepareOptions& o, Log&& log) {
  check_output_dir(o.output_dir);
  const Metadata meta = read_imdb_mat(o.mat_path, o.skip_corrupt);
  Summary sum;
  sum.records = static_cast<std::int64_t>(meta.records.size());
  sum.subject_field = meta.subject_field;
  const std::vector<Kept> kept = filter_records(meta, o, sum.counts);
  log("read " + std::to_string(sum.records) + " records of '" + meta.variable + "', kept " +
      std::to_string(kept.size()) + "; subjects by " + meta.subject_field);
  const std::vector<std::string> test_subjects =
      split_subjects(kept, o.test_fraction, static_cast<std::uint64_t>(o.seed));

  const std::string out = fs::path(o.output_dir).lexically_normal().string();
  const std::string staging =
      (fs::path(out).has_filename() ? out : fs::path(out).parent_path().string()) + ".partial." +
      std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(fs::path(staging) / "faces", ec);
  check<IoError>(!ec, "nddr-prepare-imdb-wiki: cannot create '", staging, "': ", ec.message());
  struct Cleanup {
    std::string dir;
    bool armed = true;
    ~Cleanup() {
      std::error_code e;
      if (armed) fs::remove_all(dir, e);
    }
  } cleanup{staging};

  std::string train_list, test_list, crops = "index\tsplit\tsubject\tage\tgender\tx0\ty0\tx1\ty1\tsource\n";
  std::string skipped = "index\treason\tsource\terror\n";
  std::map<std::string, int> subjects_seen;  // 0 train, 1 test
  // --skip-corrupt: records `r` for `reason` in skipped.tsv (tabs and newlines of the message
  // as spaces) and returns true; without it, false.
  const auto skip = [&](const Record& r, const char* reason, const std::string& error) {
    if (!o.skip_corrupt) return false;
    ++sum.skipped[reason];
    std::string clean = io::excerpt(error, 300);
    std::replace_if(clean.begin(), clean.end(), [](char ch) { return ch == '\t' || ch == '\n'; },
                    ' ');
    skipped += std::to_string(r.index) + '\t' + reason + '\t' + r.full_path + '\t' + clean + '\n';
    return true;
  };
  for (const Kept& k : kept) {
    const Record& r = *k.record;
    if (!r.box_error.empty() && skip(r, kSkipBox, r.box_error)) continue;
    io::Image8 img;
    try {
      img = read_jpeg(k.image);
    } catch (const IoError& e) {  // the record and field that point at the image
      if (skip(r, kSkipJpeg, e.what())) continue;
      detail::fail(o.mat_path, meta.variable + ".full_path", r.index, e.what());
    }
    const auto box = crop_box(r.box, o.margin, img.width, img.height);
    if (!box) {
      std::ostringstream os;
      os << "[" << r.box[0] << " " << r.box[1] << " " << r.box[2] << " " << r.box[3]
         << "] is not a face box inside the " << img.width << "x" << img.height << " image '"
         << k.image << "'";
      if (skip(r, kSkipBox, os.str())) continue;
      detail::fail(o.mat_path, meta.variable + ".face_location", r.index, os.str());
    }
    char name[32];
    std::snprintf(name, sizeof name, "faces/%07lld.png", static_cast<long long>(r.index));
    io::write_png((fs::path(staging) / name).string(), crop_resize(img, *box, o.size));
    const bool test = std::binary_search(test_subjects.begin(), test_subjects.end(), r.subject);
    subjects_seen[r.subject] = test;
    const std::string line =
        std::string(name) + " " + std::to_string(k.age) + " " + std::to_string(k.gender) + "\n";
    (test ? test_list : train_list) += line;
    ++(test ? sum.test : sum.train);
    std::ostringstream row;
    row << r.index << '\t' << (test ? "test" : "train") << '\t' << io::excerpt(r.subject, 200)
        << '\t' << k.age << '\t' << k.gender << '\t' << box->x0 << '\t' << box->y0 << '\t'
        << box->x1 << '\t' << box->y1 << '\t' << r.full_path << '\n';
    crops += row.str();
  }
  for (const auto& [s, t] : subjects_seen) ++(t ? sum.test_subjects : sum.train_subjects);
  check<IoError>(sum.train > 0 && sum.test > 0, "nddr-prepare-imdb-wiki: --skip-corrupt skipped ",
                 sum.skipped_total(), " records and left the ", sum.train > 0 ? "test" : "train",
                 " list without a face; nothing written");
  auto write_text = [&](const char* file, const std::string& text) {
    io::write_file_atomic("nddr-prepare-imdb-wiki", (fs::path(staging) / file).string(),
                          [&](io::AtomicWriter& w) { w.write(text); });
  };
  write_text("train.txt", train_list);
  write_text("test.txt", test_list);
  write_text("crops.tsv", crops);
  if (o.skip_corrupt) write_text("skipped.tsv", skipped);

  check_output_dir(o.output_dir);  // again: something may have appeared meanwhile
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty directory (checked above)
  fs::rename(staging, out, ec);
  check<IoError>(!ec, "nddr-prepare-imdb-wiki: cannot rename '", staging, "' to '", out, "': ",
                 ec.message());
  cleanup.armed = false;
  return sum;
}

}  // namespace nddr::apps::imdb_prep
