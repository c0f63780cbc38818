#pragma once
/// \file
/// The two network tools (docs/tools.md), compiled once in the nddr_apps library
/// (apps/src/network_tools.cpp); their mains are examples/nddr_summary.cpp and
/// examples/nddr_forward.cpp.
///
/// - `nddr-summary --network NAME [--classes 40,3] [--input 1,3,321,321]`: one row per layer
///   (name, output shape, parameters, multiply-adds, lr group) from shape inference alone, and
///   as the last line `trainable parameters: N`.
/// - `nddr-forward --network NAME --weights W --input X --output Y [--train]
///   [--targets T --loss-weights 1,20]`: one forward pass (and, with targets, the loss and
///   every parameter gradient) written to a safetensors file.
/// NAME is a name of nddr_apps/network_names.hpp on the tiny or vgg16 backbone.
///
/// Example:
///   std::ostringstream out, err;
///   int status = nddr::apps::summary_main({"--network", "tiny-nddr"}, out, err);

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "nddr/core/shape.hpp"

namespace nddr::apps {

/// One row of a summary: a layer (or fusion layer, shortcut module) of the network.
struct SummaryRow {
  std::string name;     ///< the parameter prefix: "task0.stage1.conv1_1", "fusion.stage1"
  std::string shape;    ///< output shape: "[1, 64, 321, 321]"; "2 x [...]" for a fusion layer
  std::int64_t parameters = 0;  ///< trainable parameters declared under `name.`
  std::int64_t macs = 0;        ///< multiply-adds (convolutions and fusion mixes)
  std::string group;            ///< lr group(s) of its parameters ("-" when none)
};

/// A network's summary for one input shape.
struct NetworkSummary {
  std::vector<SummaryRow> rows;
  std::int64_t parameters = 0;  ///< every trainable parameter (named_parameters)
  std::int64_t buffers = 0;     ///< BatchNorm running statistics etc.
  std::int64_t macs = 0;
};

/// The summary of network `network` (tiny-* or vgg16-*; OptionError otherwise) with
/// `classes` outputs per task for an input of shape `input` (N, 3, H, W; ShapeError when the
/// network does not accept it).
NetworkSummary summarize_network(const std::string& network,
                                 const std::vector<std::int64_t>& classes, const Shape& input);

/// `nddr-summary ARGS`: the table on `out`; exit status 0, 2 (bad command line, one line on
/// `err`) or 1 (any other error, one line on `err`).
int summary_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// `nddr-forward ARGS`: exit status 0 (the output file written, one line on `out`), 2 (a bad
/// command line) or 1 (a file that cannot be used, or another error); nothing is written unless
/// everything succeeded, and the output file is written atomically.
int forward_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace nddr::apps
