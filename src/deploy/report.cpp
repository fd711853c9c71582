#include "limpq/deploy/report.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "limpq/search/criterion.h"
#include "limpq/search/search.h"
#include "limpq/util/atomic_file.h"

namespace limpq::deploy {
namespace {

constexpr const char* kWeightColor = "#2f6db5";
constexpr const char* kActColor = "#e07b24";
constexpr const char* kFixedColor = "#9aa0a6";
constexpr const char* kInk = "#202124";
constexpr const char* kGrid = "#e3e5e8";

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A chart's SVG text with a plot area and linear (or log) axes.
class Chart {
 public:
  Chart(std::string id, double width, double height, double left, double right, double top, double bottom)
      : id_(std::move(id)), w_(width), h_(height), l_(left), r_(right), t_(top), b_(bottom) {}

  void x_range(double lo, double hi) { x0_ = lo, x1_ = hi; }
  void y_range(double lo, double hi, bool log = false) {
    y_log_ = log;
    y0_ = log ? std::log10(lo) : lo;
    y1_ = log ? std::log10(hi) : hi;
  }
  double px(double x) const { return l_ + (x - x0_) / (x1_ - x0_) * (w_ - l_ - r_); }
  double py(double y) const {
    const double v = y_log_ ? std::log10(std::max(y, 1e-300)) : y;
    return h_ - b_ - (v - y0_) / (y1_ - y0_) * (h_ - t_ - b_);
  }
  double plot_left() const { return l_; }
  double plot_right() const { return w_ - r_; }
  double plot_top() const { return t_; }
  double plot_bottom() const { return h_ - b_; }

  void add(const std::string& element) { body_ += element + "\n"; }
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& title = "") {
    add(fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">{}</rect>)", x, y,
                    std::max(w, 0.0), std::max(h, 0.0), fill,
                    title.empty() ? "" : "<title>" + escape(title) + "</title>"));
  }
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const std::string& dash = "") {
    add(fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="{}"{}/>)", x1,
                    y1, x2, y2, stroke, width, dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\""));
  }
  void text(double x, double y, const std::string& s, const std::string& anchor = "start", double size = 11,
            const std::string& extra = "") {
    add(fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="{}" font-size="{}"{}>{}</text>)", x, y, anchor, size,
                    extra, escape(s)));
  }
  void polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke, double width = 1.5) {
    std::string points;
    for (const auto& [x, y] : pts) points += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    add(fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"/>)", points, stroke, width));
  }
  void circle(double cx, double cy, double r, const std::string& fill, const std::string& title = "") {
    add(fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="{}" fill="{}">{}</circle>)", cx, cy, r, fill,
                    title.empty() ? "" : "<title>" + escape(title) + "</title>"));
  }
  // An unfilled circle (a point drawn with a caveat).
  void ring(double cx, double cy, double r, const std::string& stroke, const std::string& title = "") {
    add(fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="{}" fill="white" stroke="{}" stroke-width="1.5">{}</circle>)",
                    cx, cy, r, stroke, title.empty() ? "" : "<title>" + escape(title) + "</title>"));
  }
  // Horizontal grid lines and labels at the given y values.
  void y_grid(const std::vector<double>& ticks, const std::string& format) {
    for (double t : ticks) {
      line(plot_left(), py(t), plot_right(), py(t), kGrid);
      text(plot_left() - 6, py(t) + 4, fmt::format(fmt::runtime(format), t), "end", 10);
    }
  }
  std::string svg(const std::string& label) const {
    return fmt::format(R"(<svg class="chart" id="{}" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}">)",
                       id_, escape(label), w_, h_, w_, h_) +
           "\n" + body_ + "</svg>\n";
  }

 private:
  std::string id_;
  double w_, h_, l_, r_, t_, b_;
  double x0_ = 0, x1_ = 1, y0_ = 0, y1_ = 1;
  bool y_log_ = false;
  std::string body_;
};

struct LayerRow {
  std::string name;
  bool searchable = true;
  int64_t weight = 0, act = 0;
  int64_t macs = 0, params = 0;
};

std::vector<LayerRow> layer_rows(const ReportInputs& in) {
  std::vector<LayerRow> rows;
  for (const auto& l : in.indicators.layers) {
    const quant::LayerBits* b = in.policy.find(l.name);
    TORCH_CHECK(b != nullptr, "report: the policy has no bits for layer '", l.name, "' of the indicators");
    rows.push_back({l.name, l.searchable, b->weight, b->act, l.macs, l.params});
  }
  return rows;
}

std::string bits_chart(const std::vector<LayerRow>& rows) {
  const double bar = 11, gap = 9, group = 2 * bar + gap;
  Chart c("chart-bits", std::max(640.0, 70 + group * rows.size() + 20), 300, 50, 20, 30, 110);
  c.x_range(0, 1);
  c.y_range(0, 8);
  c.y_grid({0, 2, 4, 6, 8}, "{:.0f}");
  c.text(c.plot_left() - 40, c.plot_top() - 12, "bits", "start", 11);
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const double x = c.plot_left() + 10 + group * static_cast<double>(i);
    const int64_t wb = std::min<int64_t>(r.weight, 8), ab = std::min<int64_t>(r.act, 8);
    const std::string suffix = r.searchable ? "" : " (fixed)";
    c.rect(x, c.py(static_cast<double>(wb)), bar, c.py(0) - c.py(static_cast<double>(wb)),
           r.searchable ? kWeightColor : kFixedColor, fmt::format("{}: weights {} bits{}", r.name, r.weight, suffix));
    c.rect(x + bar, c.py(static_cast<double>(ab)), bar, c.py(0) - c.py(static_cast<double>(ab)),
           r.searchable ? kActColor : "#c4c8cc", fmt::format("{}: activations {} bits{}", r.name, r.act, suffix));
    c.text(x + bar, c.plot_bottom() + 10, r.name + suffix, "end", 9,
           fmt::format(R"svg( transform="rotate(-55 {:.1f} {:.1f})")svg", x + bar, c.plot_bottom() + 10));
  }
  c.rect(c.plot_right() - 190, 8, 10, 10, kWeightColor);
  c.text(c.plot_right() - 176, 17, "weights");
  c.rect(c.plot_right() - 110, 8, 10, 10, kActColor);
  c.text(c.plot_right() - 96, 17, "activations");
  return c.svg("bit-widths per layer");
}

std::string indicator_chart(const quant::Indicators& ind) {
  std::vector<const quant::IndicatorLayer*> layers;
  for (const auto& l : ind.layers) {
    if (l.searchable) layers.push_back(&l);
  }
  const int64_t cols = 5;
  const int64_t rows = (static_cast<int64_t>(layers.size()) + cols - 1) / cols;
  const double cw = 150, ch = 110;
  Chart c("chart-indicators", cols * cw + 20, rows * ch + 40, 0, 0, 0, 0);
  std::vector<int64_t> bits = ind.candidates;
  std::sort(bits.begin(), bits.end());
  // One log scale for all panels, so that panels compare.
  double lo = 1e300, hi = 0;
  for (const auto* l : layers) {
    for (const auto* m : {&l->weight_steps, &l->act_steps}) {
      for (const auto& [b, v] : *m) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (layers.empty() || !(hi > lo)) hi = lo * 10 + 1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const double ox = 10 + static_cast<double>(i % cols) * cw, oy = 10 + static_cast<double>(i / cols) * ch;
    const double pl = ox + 8, pr = ox + cw - 12, pt = oy + 18, pb = oy + ch - 22;
    auto x_of = [&](int64_t b) {
      return pl + (bits.size() > 1 ? (b - bits.front()) / static_cast<double>(bits.back() - bits.front()) : 0.5) *
                      (pr - pl);
    };
    auto y_of = [&](double v) {
      return pb - (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) * (pb - pt);
    };
    c.rect(pl, pt, pr - pl, pb - pt, "#f7f8fa");
    c.text(ox + 8, oy + 12, layers[i]->name, "start", 10);
    for (int64_t b : bits) c.text(x_of(b), pb + 12, std::to_string(b), "middle", 9);
    for (const auto& [values, color] : {std::pair{&layers[i]->weight_steps, kWeightColor},
                                        std::pair{&layers[i]->act_steps, kActColor}}) {
      std::string points;
      for (int64_t b : bits) points += fmt::format("{:.1f},{:.1f} ", x_of(b), y_of(values->at(b)));
      c.add(fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>)", points, color));
      for (int64_t b : bits) {
        c.circle(x_of(b), y_of(values->at(b)), 2.2, color,
                 fmt::format("{} {} at {} bits: {:.4g}", layers[i]->name, color == kWeightColor ? "weight" : "activation",
                             b, values->at(b)));
      }
    }
  }
  c.text(10, rows * ch + 32, fmt::format("x: bit-width; y: indicator on one log scale for all layers ({:.3g} to {:.3g})",
                                         lo, hi),
         "start", 10);
  return c.svg("indicator curves per layer");
}

// The uniform precisions the Pareto chart marks: W=A at every candidate,
// and the budget's own (W2A3) when it is a uniform precision with other
// weight and activation bits.
std::vector<quant::LayerBits> uniform_points(const ReportInputs& in) {
  std::vector<quant::LayerBits> out;
  for (int64_t b : in.indicators.candidates) out.push_back({b, b});
  const std::optional<quant::LayerBits> bits = search::uniform_budget(in.bitops_budget);
  if (!bits) return out;
  const auto& c = in.indicators.candidates;
  const bool candidate = std::find(c.begin(), c.end(), bits->weight) != c.end() &&
                         std::find(c.begin(), c.end(), bits->act) != c.end();
  if (candidate && std::find(out.begin(), out.end(), *bits) == out.end()) out.push_back(*bits);
  return out;
}

std::string uniform_name(const quant::LayerBits& bits) { return fmt::format("W{}A{}", bits.weight, bits.act); }

// The objective of uniform precision at `bits`, scored with the same indicators.
double uniform_objective(const ReportInputs& in, const quant::LayerBits& bits) {
  double objective = 0;
  for (const auto& l : in.indicators.layers) {
    if (l.searchable) objective += l.act_steps.at(bits.act) + *in.alpha * l.weight_steps.at(bits.weight);
  }
  return objective;
}

// Every point at its criterion value (erased indicator points at their own
// values, never the search program's penalty), so one forced answer cannot
// stretch the axis; answers that use erased points are drawn hollow.
std::string pareto_chart(const ReportInputs& in, const std::vector<search::SweepPoint>& sweep, double chosen_bitops,
                         double chosen_objective) {
  Chart c("chart-pareto", 640, 340, 70, 20, 30, 50);
  double xmax = chosen_bitops, ymin = chosen_objective, ymax = chosen_objective;
  auto include = [&](double bitops, double objective) {
    xmax = std::max(xmax, bitops);
    ymin = std::min(ymin, objective);
    ymax = std::max(ymax, objective);
  };
  for (const auto& p : sweep) {
    if (p.feasible) include(p.result.achieved_bitops, p.result.objective);
  }
  const std::vector<quant::LayerBits> uniform = uniform_points(in);
  for (const auto& bits : uniform) {
    include(search::budget_bitops(in.indicators, uniform_name(bits), in.fixed_bits), uniform_objective(in, bits));
  }
  // Room above the highest point for its label.
  const double pad = (ymax - ymin) * 0.12 + 1e-12;
  // Indicator sums are non-negative: the axis does not dip below zero.
  const double y_lo = ymin >= 0 ? std::max(0.0, ymin - pad) : ymin - pad, y_hi = ymax + pad;
  c.x_range(0, xmax * 1.05 / 1e9);
  c.y_range(y_lo, y_hi);
  std::vector<double> yt;
  for (int k = 0; k <= 4; ++k) yt.push_back(y_lo + (y_hi - y_lo) * k / 4.0);
  c.y_grid(yt, "{:.3g}");
  for (int k = 0; k <= 5; ++k) {
    const double x = xmax * 1.05 / 1e9 * k / 5.0;
    c.text(c.px(x), c.plot_bottom() + 16, fmt::format("{:.3g}", x), "middle", 10);
  }
  c.text((c.plot_left() + c.plot_right()) / 2, c.plot_bottom() + 38, "GBitOps (whole network)", "middle");
  c.text(12, c.plot_top() - 12, "search objective (sum of indicators, lower is better)", "start");
  std::vector<std::pair<double, double>> pts;
  bool any_erased = false;
  for (const auto& p : sweep) {
    if (p.feasible) pts.emplace_back(p.result.achieved_bitops / 1e9, p.result.objective);
  }
  c.polyline(pts, kWeightColor);
  for (const auto& p : sweep) {
    if (!p.feasible) continue;
    const double x = p.result.achieved_bitops / 1e9, y = p.result.objective;
    const size_t erased = p.result.erased_used.size();
    if (erased == 0) {
      c.circle(c.px(x), c.py(y), 2.5, kWeightColor, fmt::format("{:.4g} G: {:.4g}", x, y));
    } else {
      any_erased = true;
      c.ring(c.px(x), c.py(y), 4, kWeightColor,
             fmt::format("{:.4g} G: {:.4g}, uses {} erased indicator points (the budget leaves no other choice)", x, y,
                         erased));
    }
  }
  if (any_erased) {
    c.text(c.plot_right(), c.plot_top() - 12, "hollow: uses erased (non-monotone) indicator points", "end", 10);
  }
  for (const auto& bits : uniform) {
    const double objective = uniform_objective(in, bits);
    const double g = search::budget_bitops(in.indicators, uniform_name(bits), in.fixed_bits) / 1e9;
    c.rect(c.px(g) - 3.5, c.py(objective) - 3.5, 7, 7, kFixedColor, "uniform " + uniform_name(bits));
    c.text(c.px(g) + 6, c.py(objective) - 6, uniform_name(bits), "start", 9);
  }
  if (!in.bitops_budget.empty()) {
    // The budget's label at the foot of its line, clear of the points' labels.
    const double g = search::budget_bitops(in.indicators, in.bitops_budget, in.fixed_bits) / 1e9;
    c.line(c.px(g), c.plot_top(), c.px(g), c.plot_bottom(), kInk, 1, "4 3");
    c.text(c.px(g) + 4, c.plot_bottom() - 6, "budget " + in.bitops_budget, "start", 10);
  }
  c.circle(c.px(chosen_bitops / 1e9), c.py(chosen_objective), 6, "#d93025", "the chosen policy");
  c.text(c.px(chosen_bitops / 1e9) + 9, c.py(chosen_objective) + 4, "chosen policy", "start", 11,
         R"( font-weight="bold")");
  return c.svg("Pareto frontier of the BitOps sweep");
}

std::string budget_chart(const std::string& label_bitops, double bitops, double budget_bitops, double fp_bitops,
                         double size_bits, double budget_size_bits, double fp_size_bits) {
  Chart c("chart-budget", 640, 150, 150, 30, 20, 20);
  struct Row {
    std::string name;
    double used, budget, full;
  };
  const std::vector<Row> rows = {{"BitOps " + label_bitops, bitops, budget_bitops, fp_bitops},
                                 {"weight size", size_bits, budget_size_bits, fp_size_bits}};
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const double y = 30 + 55.0 * static_cast<double>(i);
    const double scale = std::max(r.used, r.budget) * 1.1;
    const double x0 = c.plot_left(), width = c.plot_right() - c.plot_left();
    c.text(x0 - 8, y + 14, r.name, "end", 11);
    c.rect(x0, y, width, 20, "#f1f3f4");
    c.rect(x0, y, width * r.used / scale, 20, i == 0 ? kWeightColor : kActColor);
    const std::string detail =
        i == 0 ? fmt::format("{:.4g} G ({:.0f}x fewer than 32-bit)", r.used / 1e9, r.full / r.used)
               : fmt::format("{:.1f} KB ({:.1f}x smaller than 32-bit)", r.used / 8e3, r.full / r.used);
    c.text(x0 + 6, y + 14, detail, "start", 11, R"( fill="white")");
    if (r.budget > 0) {
      c.line(x0 + width * r.budget / scale, y - 5, x0 + width * r.budget / scale, y + 25, kInk, 2);
      c.text(x0 + width * r.budget / scale, y + 38, "budget", "middle", 10);
    }
  }
  return c.svg("BitOps and weight size against the budget");
}

std::string accuracy_chart(const std::vector<ReportAccuracy>& acc) {
  Chart c("chart-accuracy", 640, 60 + 34.0 * acc.size(), 170, 60, 20, 20);
  double lo = 100, hi = 0;
  for (const auto& a : acc) lo = std::min(lo, a.top1), hi = std::max(hi, a.top1);
  const double x_lo = std::max(0.0, std::floor(lo - 3)), x_hi = std::min(100.0, std::ceil(hi + 1));
  c.x_range(x_lo, x_hi);
  for (size_t i = 0; i < acc.size(); ++i) {
    const double y = 20 + 34.0 * static_cast<double>(i);
    const auto& a = acc[i];
    const std::string color = a.bitops == 0 ? kFixedColor : (a.name.find("uniform") != std::string::npos ? "#8ab4f8"
                                                                                                          : kWeightColor);
    c.text(c.plot_left() - 8, y + 15, a.name, "end", 11);
    c.rect(c.plot_left(), y, c.px(a.top1) - c.plot_left(), 22, color,
           fmt::format("{}: {:.2f}% top-1", a.name, a.top1));
    c.text(c.px(a.top1) + 6, y + 15, fmt::format("{:.2f}%", a.top1), "start", 11);
  }
  c.text(c.plot_left(), 14 + 34.0 * acc.size() + 24, fmt::format("top-1 accuracy (axis from {:.0f}%)", x_lo), "start",
         10);
  return c.svg("accuracy against full precision and uniform precision");
}

// The policy's choices at erased indicator points (a value below the one
// at the next larger candidate, as the search erases them): "layer:weight@2".
std::vector<std::string> erased_points_used(const ReportInputs& in) {
  std::vector<int64_t> bits = in.indicators.candidates;
  std::sort(bits.rbegin(), bits.rend());
  std::vector<std::string> used;
  for (const auto& l : in.indicators.layers) {
    const quant::LayerBits* b = l.searchable ? in.policy.find(l.name) : nullptr;
    if (b == nullptr) continue;
    auto erased = [&](const std::map<int64_t, double>& values, int64_t chosen) {
      for (size_t i = 0; i + 1 < bits.size(); ++i) {
        if (bits[i + 1] == chosen && values.at(chosen) < values.at(bits[i])) return true;
      }
      return false;
    };
    if (erased(l.weight_steps, b->weight)) used.push_back(fmt::format("{}:weight@{}", l.name, b->weight));
    if (erased(l.act_steps, b->act)) used.push_back(fmt::format("{}:act@{}", l.name, b->act));
  }
  return used;
}

// The run's final table: cost against the budget, accuracy, training time.
std::string accuracy_table(const std::vector<ReportAccuracy>& acc) {
  std::ostringstream t;
  t << "<table id=\"table-accuracy\"><tr><th>model</th><th>GBitOps (of budget)</th><th>weights KB (vs 32-bit)</th>"
       "<th>top-1</th><th>top-5</th><th>trained in</th></tr>\n";
  for (const auto& a : acc) {
    std::string bitops = "32/32", size = "32-bit";
    if (a.bitops > 0) {
      bitops = a.budget_bitops > 0 ? fmt::format("{:.4f} ({:.0f}%)", a.bitops / 1e9, 100 * a.bitops / a.budget_bitops)
                                   : fmt::format("{:.4f}", a.bitops / 1e9);
      size = a.fp_size_bytes > 0 ? fmt::format("{:.1f} ({:.1f}x smaller)", a.size_bytes / 1e3, a.fp_size_bytes / a.size_bytes)
                                 : fmt::format("{:.1f}", a.size_bytes / 1e3);
    }
    const std::string trained =
        a.train_seconds <= 0 ? "" : a.train_seconds < 60 ? fmt::format("{:.0f} s", a.train_seconds)
                                                          : fmt::format("{:.1f} min", a.train_seconds / 60);
    t << "<tr><td>" << escape(a.name) << "</td><td>" << bitops << "</td><td>" << size << "</td><td>"
      << fmt::format("{:.2f}%", a.top1) << "</td><td>" << (a.top5 > 0 ? fmt::format("{:.2f}%", a.top5) : "")
      << "</td><td>" << trained << "</td></tr>\n";
  }
  t << "</table>\n";
  return t.str();
}

// The inputs with the indicators replaced by the criterion's values, and
// the criterion and alpha resolved as `limpq search` resolves them.
ReportInputs with_criterion_values(const ReportInputs& inputs) {
  ReportInputs in = inputs;
  const search::Criterion criterion = inputs.criterion.empty() ? search::default_criterion(inputs.indicators)
                                                               : search::parse_criterion(inputs.criterion);
  in.indicators = search::apply_criterion(inputs.indicators, criterion);
  in.criterion = search::to_string(criterion);
  in.alpha = inputs.alpha.value_or(search::default_alpha(criterion, in.indicators));
  return in;
}

}  // namespace

std::string render_report(const ReportInputs& inputs) {
  const ReportInputs in = with_criterion_values(inputs);
  const std::vector<LayerRow> rows = layer_rows(in);
  double bitops = 0, fp_bitops = 0, size_bits = 0, fp_size_bits = 0, objective = 0;
  for (const auto& r : rows) {
    bitops += static_cast<double>(r.macs) * r.weight * r.act;
    fp_bitops += static_cast<double>(r.macs) * 32 * 32;
    size_bits += static_cast<double>(r.params) * r.weight;
    fp_size_bits += static_cast<double>(r.params) * 32;
  }
  for (const auto& l : in.indicators.layers) {
    if (!l.searchable) continue;
    const quant::LayerBits* b = in.policy.find(l.name);
    auto value = [&](const std::map<int64_t, double>& m, int64_t bits) {
      auto it = m.find(bits);
      TORCH_CHECK(it != m.end(), "report: layer '", l.name, "' has no indicator at ", bits,
                  " bits (the policy's bits must be candidates of the indicators)");
      return it->second;
    };
    objective += value(l.act_steps, b->act) + *in.alpha * value(l.weight_steps, b->weight);
  }
  const double budget = in.bitops_budget.empty() ? 0 : search::budget_bitops(in.indicators, in.bitops_budget,
                                                                              in.fixed_bits);
  const double size_budget = in.cr_budget > 0 ? fp_size_bits / in.cr_budget : 0;

  std::vector<int64_t> bits = in.indicators.candidates;
  std::sort(bits.begin(), bits.end());
  std::vector<search::SweepPoint> sweep;
  if (bits.size() > 1) {
    // The values are the criterion's already: searched as they stand.
    sweep = search::run_sweep(in.indicators,
                              search::SearchOptions().criterion("step").alpha(in.alpha).fixed_bits(in.fixed_bits),
                              search::SweepOptions()
                                  .points(in.sweep_points)
                                  .from(fmt::format("W{0}A{0}", bits.front()))
                                  .to(fmt::format("W{0}A{0}", bits.back())));
  }

  std::ostringstream html;
  html << R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>)" << escape(in.title) << R"(</title>
<style>
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #202124; margin: 24px auto;
       max-width: 1100px; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.sub { color: #5f6368; margin-top: 0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #dadce0; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; }
svg.chart { display: block; max-width: 100%; height: auto; font-family: inherit; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
</style></head><body>
)";
  html << "<h1>" << escape(in.title) << "</h1>\n";
  html << "<p class=\"sub\">" << escape(in.indicators.model) << ", input "
       << escape(fmt::format("{}", fmt::join(in.indicators.input_shape, "x"))) << ", candidates "
       << escape(fmt::format("{}", fmt::join(in.indicators.candidates, ", "))) << " bits, criterion "
       << escape(in.criterion) << ", alpha " << fmt::format("{:g}", *in.alpha) << ", fixed layers at " << in.fixed_bits
       << " bits</p>\n";
  html << "<div class=\"cards\">";
  html << fmt::format("<div class=\"card\">BitOps<b>{:.4g} G</b>{}</div>", bitops / 1e9,
                      budget > 0 ? fmt::format("budget {:.4g} G ({})", budget / 1e9, escape(in.bitops_budget)) : "");
  html << fmt::format("<div class=\"card\">weights<b>{:.1f} KB</b>{:.1f}x smaller than 32-bit</div>", size_bits / 8e3,
                      fp_size_bits / size_bits);
  for (const auto& a : in.accuracy) {
    html << fmt::format("<div class=\"card\">{}<b>{:.2f}%</b>top-1</div>", escape(a.name), a.top1);
  }
  html << "</div>\n";
  if (const auto used = erased_points_used(in); !used.empty()) {
    html << "<p class=\"sub\">This policy uses " << used.size()
         << " erased (non-monotone) indicator points, the budget leaving no other choice: "
         << escape(fmt::format("{}", fmt::join(used, ", ")))
         << ". The objective counts them at their own values.</p>\n";
  }
  html << "<h2>Bit-widths per layer</h2>\n" << bits_chart(rows);
  html << "<h2>BitOps and size against the budget</h2>\n"
       << budget_chart(in.bitops_budget.empty() ? "" : "(" + in.bitops_budget + ")", bitops, budget, fp_bitops,
                       size_bits, size_budget, fp_size_bits);
  if (!in.accuracy.empty()) html << "<h2>Accuracy</h2>\n" << accuracy_chart(in.accuracy) << accuracy_table(in.accuracy);
  if (!sweep.empty()) {
    html << "<h2>Pareto frontier</h2>\n<p class=\"sub\">The search solved at " << sweep.size()
         << " BitOps budgets; grey squares are uniform precisions scored with the same indicators.</p>\n"
         << pareto_chart(in, sweep, bitops, objective);
  }
  html << "<h2>Indicator curves</h2>\n<p class=\"sub\">Each layer's indicators over the candidate bit-widths: "
          "<span style=\"color:" << kWeightColor << "\">weights</span> and <span style=\"color:" << kActColor
       << "\">activations</span>. A layer whose curve stays high at few bits is one the search protects.</p>\n"
       << indicator_chart(in.indicators);
  html << "<h2>Policy</h2>\n<table><tr><th>layer</th><th>weights</th><th>activations</th><th>MACs</th>"
          "<th>parameters</th></tr>\n";
  for (const auto& r : rows) {
    html << fmt::format("<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", escape(r.name),
                        r.searchable ? "" : " (fixed)", r.weight, r.act, r.macs, r.params);
  }
  html << "</table>\n";
  // Set after layout: the number of charts the browser drew with a size
  // (the report's test reads it back from headless Chromium).
  html << R"(<script>
window.addEventListener('load', function () {
  var drawn = 0;
  document.querySelectorAll('svg.chart').forEach(function (s) {
    var b = s.getBBox(); if (b.width > 0 && b.height > 0 && s.querySelectorAll('rect,polyline,circle').length > 0) drawn++;
  });
  document.body.setAttribute('data-charts-drawn', String(drawn));
});
</script>
</body></html>
)";
  return html.str();
}

void add_run_summary(const std::string& summary_path, ReportInputs& inputs) {
  const auto rows = nlohmann::json::parse(util::read_file(summary_path), nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(rows.is_array(), "report: '", summary_path, "' is not the summary.json of `limpq run` (a JSON array)");
  for (const auto& r : rows) {
    TORCH_CHECK(r.is_object() && r.contains("name") && r["name"].is_string() && r.contains("top1") &&
                    r["top1"].is_number(),
                "report: '", summary_path, "': a row lacks name (text) or top1 (number)");
    const std::string name = r["name"].get<std::string>();
    const auto number = [&](const char* key) { return r.contains(key) && r[key].is_number() ? r[key].get<double>() : 0.0; };
    inputs.accuracy.push_back({name, r["top1"].get<double>(), number("bitops"), number("size_bytes"), number("top5"),
                               number("train_seconds"), number("budget_bitops"), number("fp_size_bytes")});
    if (inputs.bitops_budget.empty() && name.rfind("uniform ", 0) == 0) inputs.bitops_budget = name.substr(8);
  }
}

ReportInputs run_report_inputs(const std::string& run_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(run_dir);
  ReportInputs in;
  std::string indicators = (dir / "indicators" / "indicators.json").string();
  const std::string search_path = (dir / "search.json").string();
  if (util::file_exists(search_path)) {
    const auto s = nlohmann::json::parse(util::read_file(search_path), nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(s.is_object(), "report: '", search_path, "' is not a JSON object (the search.json of `limpq run`)");
    try {
      indicators = s.value("indicators", indicators);
      in.criterion = s.value("criterion", std::string());
      if (s.contains("alpha")) in.alpha = s["alpha"].get<double>();
      in.bitops_budget = s.value("bitops_budget", std::string());
      in.cr_budget = s.value("cr_budget", 0.0);
      in.fixed_bits = s.value("fixed_bits", in.fixed_bits);
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK(false, "report: '", search_path, "': a field has the wrong type (", e.what(), ")");
    }
  }
  in.indicators = quant::read_indicators(indicators);
  in.policy = quant::read_policy((dir / "policy.json").string());
  const std::string summary = (dir / "summary.json").string();
  if (util::file_exists(summary)) add_run_summary(summary, in);
  in.title = "limpq policy: " + in.indicators.model;
  return in;
}

std::string write_run_report(const std::string& run_dir) {
  return write_report(ReportOptions().run(run_dir));
}

std::string write_report(const ReportOptions& options) {
  ReportInputs in;
  std::string out = options.out();
  if (!options.run().empty()) {
    TORCH_CHECK(std::filesystem::is_directory(options.run()), "report: --run '", options.run(),
                "' is not a folder (give the run.out_dir of a limpq run)");
    in = run_report_inputs(options.run());
    if (out.empty()) out = (std::filesystem::path(options.run()) / "report.html").string();
  } else {
    TORCH_CHECK(!options.indicators().empty() && !options.policy().empty(),
                "report: give --run DIR, or --indicators and --policy");
  }
  if (out.empty()) out = "report.html";
  if (!options.indicators().empty()) in.indicators = quant::read_indicators(options.indicators());
  if (!options.policy().empty()) in.policy = quant::read_policy(options.policy());
  if (!options.summary().empty()) {
    in.accuracy.clear();
    add_run_summary(options.summary(), in);
  }
  if (!options.bitops().empty()) in.bitops_budget = options.bitops();
  if (!options.criterion().empty()) in.criterion = options.criterion();
  if (options.cr()) in.cr_budget = *options.cr();
  if (options.alpha()) in.alpha = options.alpha();
  if (options.fixed_bits()) in.fixed_bits = *options.fixed_bits();
  in.title = "limpq policy: " + in.indicators.model;
  util::write_file_atomic(out, render_report(in));
  return out;
}

}  // namespace limpq::deploy
