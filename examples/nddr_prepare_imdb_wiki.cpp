// nddr-prepare-imdb-wiki: the official IMDB-WIKI download (imdb.mat or wiki.mat and its JPEG
// images) to what nddr-imdb-wiki reads: OUT/train.txt, OUT/test.txt (`faces/<record>.png <age>
// <gender>`), the face crops OUT/faces/*.png, and OUT/crops.tsv (record, split, subject, age,
// gender, crop box, source image). docs/data-imdb-wiki.md walks through it; the steps are in
// apps/include/nddr_apps/imdb_prepare.hpp.
//
// Usage: nddr-prepare-imdb-wiki --mat imdb_crop/imdb.mat --output-dir imdb-faces
//        [--image-root DIR] [--min-face-score 1] [--max-second-face-score 0] [--margin 0.4]
//        [--size 224] [--test-fraction 0.16] [--seed 0] [--skip-corrupt]
// Exit status: 0 done, 1 an error (one line naming the file, the record and the field; nothing
// is written), 2 a bad command line.
#include <nddr_apps/cli.hpp>
#include <nddr_apps/imdb_prepare.hpp>

#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <string>
#include <string_view>

int main(int argc, char** argv) {
  namespace prep = nddr::apps::imdb_prep;
  using nddr::cli::RealRange;
  prep::PrepareOptions o;
  nddr::cli::ArgParser p("nddr-prepare-imdb-wiki",
                         "Prepares IMDB-WIKI (imdb.mat / wiki.mat and its JPEG images) for "
                         "nddr-imdb-wiki: filters, subject-disjoint split, face crops as PNG");
  p.path("mat", o.mat_path, "the official metadata file, imdb.mat or wiki.mat")
      .required()
      .path("output-dir", o.output_dir, "where train.txt, test.txt and faces/ go (new or empty)")
      .required()
      .path("image-root", o.image_root, "directory the .mat's full_path entries are relative to")
      .default_text("the .mat's directory")
      .real("min-face-score", o.min_face_score, "keep faces whose face_score is >= this",
            RealRange{})
      .real("max-second-face-score", o.max_second_face_score,
            "keep faces whose second_face_score is NaN or <= this", RealRange{})
      .real("margin", o.margin, "grow the face box by this fraction of its size on every side",
            RealRange{0.0, 2.0, false})
      .integer("size", o.size, "side of the square PNG crops", std::int64_t{8}, std::int64_t{4096})
      .real("test-fraction", o.test_fraction, "fraction of the subjects in the test list",
            RealRange{0.0, 0.95, true})
      .integer("seed", o.seed, "seed of the subject split", std::int64_t{0})
      .flag("skip-corrupt", o.skip_corrupt,
            "skip records whose JPEG cannot be decoded or whose face box is not inside the "
            "image (listed in OUTPUT/skipped.tsv) instead of stopping at the first");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  try {
    const prep::Summary s =
        prep::prepare(o, [](const std::string& line) { std::cout << line << "\n" << std::flush; });
    for (const auto& [reason, n] : s.counts.dropped)
      std::cout << "dropped " << n << ": " << reason << "\n";
    for (const auto& [reason, n] : s.skipped)
      std::cout << "skipped " << n << ": " << reason << "\n";
    if (o.skip_corrupt)
      std::cout << "skipped " << s.skipped_total() << " record(s) in all (--skip-corrupt), listed "
                << "in '" << o.output_dir << "/skipped.tsv'\n";
    std::cout << "train: " << s.train << " faces of " << s.train_subjects << " subjects\n"
              << "test: " << s.test << " faces of " << s.test_subjects << " subjects\n"
              << "wrote '" << o.output_dir << "' (train.txt, test.txt, faces/, crops.tsv"
              << (o.skip_corrupt ? ", skipped.tsv" : "") << "); "
              << "nddr-imdb-wiki --train-list " << o.output_dir << "/train.txt --test-list "
              << o.output_dir << "/test.txt --image-root " << o.output_dir << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::string_view what = e.what();  // one prefix, whether the message has its own or not
    if (what.starts_with("nddr-prepare-imdb-wiki: ")) what.remove_prefix(24);
    std::cerr << "nddr-prepare-imdb-wiki: " << what << "\n";
    return 1;
  }
}
