// The text helpers of nddr/io/file.hpp that the list readers stand on: TextLineReader (bounded
// lines, binary / UTF-16 / invalid UTF-8 refused), UTF-8 validation and `excerpt`.
#include <catch2/catch.hpp>
#include <fstream>
#include <nddr/io/file.hpp>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"

using Catch::Contains;
using nddr_test::TempDir;

namespace {

using nddr_test::spit;

std::vector<std::string> lines_of(const std::string& path, nddr::io::TextLimits limits = {}) {
  nddr::io::TextLineReader in("test", path, limits);
  std::vector<std::string> out;
  for (std::string line; in.next(line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("excerpt: short, printable, cut with the full size", "[io][text]") {
  using nddr::io::excerpt;
  CHECK(excerpt("plain.png") == "plain.png");
  CHECK(excerpt(std::string("a\0b\x1b[\\", 6)) == "a\\x00b\\x1B[\\x5C");
  CHECK(excerpt("caf\xC3\xA9") == "caf\xC3\xA9");             // UTF-8 stays readable
  CHECK(excerpt("caf\xE9") == "caf\\xE9");                    // Latin-1 does not
  CHECK(excerpt("\xC2\x9B" "31m") == "\\xC2\\x9B31m");        // a C1 control (CSI) is escaped
  CHECK(excerpt(std::string(1000, 'x'), 10) == "xxxxxxxxxx ... (1000 bytes)");
  CHECK(excerpt("ab\xC3\xA9", 3) == "ab\\xC3 ... (4 bytes)");  // a character cut at the limit
}

TEST_CASE("find_invalid_utf8: overlong forms, surrogates, beyond U+10FFFF, cut sequences",
          "[io][text]") {
  using nddr::io::find_invalid_utf8;
  constexpr auto kValid = std::string::npos;
  CHECK(find_invalid_utf8("ascii only") == kValid);
  CHECK(find_invalid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") == kValid);  // é € 😀
  CHECK(find_invalid_utf8("\xF4\x8F\xBF\xBF") == kValid);                      // U+10FFFF
  CHECK(find_invalid_utf8("a\x80") == 1);                                     // stray continuation
  CHECK(find_invalid_utf8("ab\xC0\xAF") == 2);                                // overlong '/'
  CHECK(find_invalid_utf8("\xE0\x80\xAF") == 0);                              // overlong, 3 bytes
  CHECK(find_invalid_utf8("\xED\xA0\x80") == 0);                              // U+D800
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);                          // U+110000
  CHECK(find_invalid_utf8("x\xE2\x82") == 1);                                 // cut
  CHECK(find_invalid_utf8("\xFF") == 0);
}

TEST_CASE("TextLineReader: lines, CRLF, a UTF-8 BOM, no final newline", "[io][text]") {
  TempDir dir("nddr_text_test_");
  const std::string path = dir.file("list.txt");
  spit(path, "\xEF\xBB\xBF" "a b\r\n\n\tc\xC3\xA9 d\nlast");
  CHECK(lines_of(path) == std::vector<std::string>{"a b", "", "\tc\xC3\xA9 d", "last"});
  spit(path, "");
  CHECK(lines_of(path).empty());
  // Lines of exactly the limit pass, one byte more fails, across 64 KiB read blocks too.
  const std::string at_limit(4096, 'x');
  spit(path, std::string(70000, '\n') + at_limit + "\n" + at_limit + "y\n");
  nddr::io::TextLineReader in("test", path);
  std::string line;
  for (int i = 0; i < 70001; ++i) REQUIRE(in.next(line));
  CHECK(line == at_limit);
  CHECK(in.line_number() == 70001);
  CHECK_THROWS_WITH(in.next(line), Contains(path) && Contains("line 70002: longer than 4096"));
}

TEST_CASE("TextLineReader: binary, UTF-16 and control characters are refused", "[io][text]") {
  TempDir dir("nddr_text_test_");
  const std::string path = dir.file("bad.txt");
  auto error = [&](const std::string& bytes) {
    spit(path, bytes);
    try {
      lines_of(path);
    } catch (const nddr::IoError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error(std::string("ok\n/img0.png\0evil x\n", 20)),
             Contains("test: '" + path + "' line 2: NUL byte at byte 10"));
  CHECK_THAT(error("\xFF\xFEi\0m\0g\0"), Contains("line 1: UTF-16"));
  CHECK_THAT(error("\xFE\xFF\0i\0m"), Contains("line 1: UTF-16"));
  CHECK_THAT(error("a\x1b[0m b\n"), Contains("line 1: control character \\x1B at byte 2"));
  CHECK_THAT(error("a b\rc d\r"), Contains("control character \\x0D at byte 4"));
  CHECK_THAT(error("a\x7F\n"), Contains("control character \\x7F"));
  CHECK_THAT(error("ok\ncaf\xE9 x\n"), Contains("line 2: invalid UTF-8 at byte 4"));
  const std::string msg = error(std::string(1 << 20, 'z'));
  CHECK_THAT(msg, Contains("line 1: longer than 4096 bytes"));
  CHECK(msg.size() < 300);
  // A size limit refuses the file before any line is read.
  spit(path, "a b\n");
  CHECK_THROWS_WITH(lines_of(path, nddr::io::TextLimits{4096, 3}),
                    Contains("is 4 bytes, more than the 3 bytes a text list may have"));
  CHECK_THROWS_WITH(lines_of(dir.file("none.txt")), Contains("cannot open for reading"));
}
