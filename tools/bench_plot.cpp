// `palm bench --plot`: the SVG chart (bench.hpp), written by hand with fmt.
// Two rows of panels: messages/s, and round trips (p50 solid, p99 dashed);
// a column per worker count; in each panel the payload across (log 2) and
// one line per transport. A row shares its y scale, logarithmic when its
// figures span a decade or more, so panels compare at a glance.
#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "bench.hpp"
#include "farm_run.hpp"

namespace palm::tools {
namespace {

constexpr double kPanelW = 250, kPanelH = 210;
constexpr double kLeft = 96, kRight = 24, kGapX = 26, kGapY = 78, kBottom = 56;
constexpr double kMinWidth = 760;  // room for the title and legend

const char* color_of(const std::string& transport, std::size_t index) {
  if (transport == "shm") return "#1f77b4";
  if (transport == "ipc") return "#ff7f0e";
  if (transport == "tcp") return "#2ca02c";
  if (transport == "shm-bypass") return "#9467bd";
  static const char* const kMore[] = {"#d62728", "#8c564b", "#e377c2", "#7f7f7f"};
  return kMore[index % 4];
}

std::string escape(std::string_view s) {
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

// A value axis: [lo, hi], logarithmic or linear, with its ticks.
struct Scale {
  double lo = 0, hi = 1;
  bool log = false;

  static Scale fit(double min, double max) {
    Scale s;
    if (!(min > 0) || !(max > 0)) min = max = 1;
    s.log = max / min >= 10;
    if (s.log) {
      s.lo = std::pow(10.0, std::floor(std::log10(min)));
      s.hi = std::pow(10.0, std::ceil(std::log10(max)));
    } else {
      s.lo = 0;
      const double step = nice_step(max / 4);
      s.hi = std::max(step, std::ceil(max * 1.05 / step) * step);
    }
    return s;
  }

  // 0 at lo, 1 at hi.
  double at(double v) const {
    if (log) return (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }

  // Labelled ticks, and unlabelled ones for the grid's fainter lines.
  void ticks(std::vector<double>& major, std::vector<double>& minor) const {
    if (log) {
      const int decades = static_cast<int>(std::lround(std::log10(hi / lo)));
      for (double d = lo; d <= hi * 1.0001; d *= 10) {
        major.push_back(d);
        for (int m = 2; m <= 9 && d * m < hi; ++m) {
          // Few decades: 2 and 5 get labels too.
          if (decades <= 2 && (m == 2 || m == 5)) {
            major.push_back(d * m);
          } else {
            minor.push_back(d * m);
          }
        }
      }
    } else {
      const double step = nice_step((hi - lo) / 4);
      for (double v = lo; v <= hi * 1.0001; v += step) major.push_back(v);
    }
  }

  static double nice_step(double raw) {
    if (!(raw > 0)) return 1;
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
      if (raw <= m * p) return m * p;
    }
    return 10 * p;
  }
};

std::string count_label(double v) {
  if (v >= 1e6) return fmt::format("{:g}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:g}k", v / 1e3);
  return fmt::format("{:g}", v);
}

std::string micros_label(double v) {
  if (v >= 1e6) return fmt::format("{:g} s", v / 1e6);
  if (v >= 1e3) return fmt::format("{:g} ms", v / 1e3);
  return fmt::format("{:g} µs", v);
}

struct Series {
  std::string transport;
  std::string color;
  std::string dash;  // "" solid
  std::vector<std::pair<std::size_t, double>> points;  // payload, value
};

}  // namespace

std::string bench_svg(const std::vector<BenchRow>& rows, const std::vector<std::string>& transports,
                      const std::string& title, const std::string& subtitle) {
  std::vector<unsigned> workers;
  std::vector<std::size_t> payloads;
  for (const auto& r : rows) {
    if (std::find(workers.begin(), workers.end(), r.workers) == workers.end()) workers.push_back(r.workers);
    if (std::find(payloads.begin(), payloads.end(), r.payload) == payloads.end()) payloads.push_back(r.payload);
  }
  std::sort(workers.begin(), workers.end());
  std::sort(payloads.begin(), payloads.end());
  if (workers.empty()) workers.push_back(1);
  if (payloads.empty()) payloads.push_back(64);

  std::vector<std::string> sub_lines;
  for (std::size_t at = 0; at <= subtitle.size();) {
    const auto nl = std::min(subtitle.find('\n', at), subtitle.size());
    sub_lines.push_back(subtitle.substr(at, nl - at));
    at = nl + 1;
  }
  const auto cols = static_cast<double>(workers.size());
  const double panels_w = cols * kPanelW + (cols - 1) * kGapX;
  const double width = std::max(kMinWidth, kLeft + panels_w + kRight);
  const double left0 = kLeft + (width - kLeft - kRight - panels_w) / 2;  // the panels centred
  const double legend_y = 58 + 17 * static_cast<double>(sub_lines.size());
  const double plot_top = legend_y + 48;
  const double height = plot_top + 2 * kPanelH + kGapY + kBottom;

  // x: the payload, log 2, a margin either side (one payload: centred).
  const double x_lo = std::log2(static_cast<double>(payloads.front()));
  const double x_hi = std::log2(static_cast<double>(payloads.back()));
  const auto x_frac = [&](std::size_t payload) {
    if (x_hi <= x_lo) return 0.5;
    return 0.06 + 0.88 * (std::log2(static_cast<double>(payload)) - x_lo) / (x_hi - x_lo);
  };

  // The two rows' scales, each over all its panels.
  double t_min = std::numeric_limits<double>::max(), t_max = 0, l_min = t_min, l_max = 0;
  for (const auto& r : rows) {
    t_min = std::min(t_min, r.msgs_per_s);
    t_max = std::max(t_max, r.msgs_per_s);
    l_min = std::min({l_min, r.p50_us, r.p99_us});
    l_max = std::max({l_max, r.p50_us, r.p99_us});
  }
  const Scale thr = Scale::fit(t_min, t_max);
  const Scale lat = Scale::fit(l_min, l_max);

  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} {1:.0f}\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height);
  svg += fmt::format("<text x=\"{:.0f}\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{}</text>\n", kLeft - 70,
                     escape(title));
  for (std::size_t i = 0; i < sub_lines.size(); ++i) {
    svg += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"12\" fill=\"#444\">{}</text>\n", kLeft - 70,
                       50 + 17 * static_cast<double>(i), escape(sub_lines[i]));
  }

  // The legend: a colour per transport, a dash per percentile.
  double lx = kLeft - 70;
  const double ly = legend_y;
  for (std::size_t i = 0; i < transports.size(); ++i) {
    svg += fmt::format(
        "<line x1=\"{0:.0f}\" y1=\"{1:.0f}\" x2=\"{2:.0f}\" y2=\"{1:.0f}\" stroke=\"{3}\" stroke-width=\"3\"/>"
        "<circle cx=\"{4:.0f}\" cy=\"{1:.0f}\" r=\"3.5\" fill=\"{3}\"/>"
        "<text x=\"{5:.0f}\" y=\"{6:.0f}\">{7}</text>\n",
        lx, ly, lx + 28, color_of(transports[i], i), lx + 14, lx + 34, ly + 4, escape(transports[i]));
    lx += 34 + 8.0 * static_cast<double>(transports[i].size()) + 30;
  }
  lx += 20;
  svg += fmt::format(
      "<line x1=\"{0:.0f}\" y1=\"{1:.0f}\" x2=\"{2:.0f}\" y2=\"{1:.0f}\" stroke=\"#333\" stroke-width=\"2\"/>"
      "<text x=\"{3:.0f}\" y=\"{4:.0f}\">round trip p50</text>\n",
      lx, ly, lx + 28, lx + 34, ly + 4);
  lx += 34 + 110;
  svg += fmt::format(
      "<line x1=\"{0:.0f}\" y1=\"{1:.0f}\" x2=\"{2:.0f}\" y2=\"{1:.0f}\" stroke=\"#333\" stroke-width=\"2\" "
      "stroke-dasharray=\"6 4\"/><text x=\"{3:.0f}\" y=\"{4:.0f}\">round trip p99</text>\n",
      lx, ly, lx + 28, lx + 34, ly + 4);

  for (int row = 0; row < 2; ++row) {
    const Scale& scale = row == 0 ? thr : lat;
    const double top = plot_top + row * (kPanelH + kGapY);
    // The row's title, turned along its y axis.
    const std::string row_title = row == 0 ? "throughput, messages/s" : "round trip";
    svg += fmt::format(
        "<text transform=\"translate({:.0f},{:.0f}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\" "
        "font-weight=\"bold\">{}{}</text>\n",
        left0 - 78, top + kPanelH / 2, escape(row_title), scale.log ? " (log)" : "");
    std::vector<double> major, minor;
    scale.ticks(major, minor);

    for (std::size_t col = 0; col < workers.size(); ++col) {
      const double left = left0 + static_cast<double>(col) * (kPanelW + kGapX);
      const auto px = [&](std::size_t payload) { return left + x_frac(payload) * kPanelW; };
      const auto py = [&](double v) { return top + kPanelH - std::clamp(scale.at(v), 0.0, 1.0) * kPanelH; };
      if (row == 0) {
        svg += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" text-anchor=\"middle\" font-size=\"13\" "
                           "font-weight=\"bold\">{} worker{}</text>\n",
                           left + kPanelW / 2, top - 10, workers[col], workers[col] == 1 ? "" : "s");
      }
      svg += fmt::format("<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"#fafafa\" "
                         "stroke=\"#888\"/>\n",
                         left, top, kPanelW, kPanelH);
      for (double v : minor) {
        svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>\n",
                           left, py(v), left + kPanelW);
      }
      for (double v : major) {
        svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>\n",
                           left, py(v), left + kPanelW);
        if (col == 0) {
          svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" font-size=\"11\">{}</text>\n",
                             left - 6, py(v) + 4, escape(row == 0 ? count_label(v) : micros_label(v)));
        }
      }
      for (std::size_t p : payloads) {
        svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/>\n"
                           "<text x=\"{0:.1f}\" y=\"{3:.1f}\" text-anchor=\"middle\" font-size=\"11\">{4}</text>\n",
                           px(p), top, top + kPanelH, top + kPanelH + 16, escape(format_bytes(p)));
      }
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"11\" "
                         "fill=\"#444\">payload</text>\n",
                         left + kPanelW / 2, top + kPanelH + 32);

      // The lines: throughput, or p50 and p99.
      std::vector<Series> series;
      for (std::size_t t = 0; t < transports.size(); ++t) {
        const std::string color = color_of(transports[t], t);
        for (int k = 0; k < (row == 0 ? 1 : 2); ++k) {
          Series s{transports[t], color, k == 1 ? "6 4" : "", {}};
          for (const auto& r : rows) {
            if (r.transport != transports[t] || r.workers != workers[col]) continue;
            s.points.emplace_back(r.payload, row == 0 ? r.msgs_per_s : (k == 0 ? r.p50_us : r.p99_us));
          }
          std::sort(s.points.begin(), s.points.end());
          series.push_back(std::move(s));
        }
      }
      for (const auto& s : series) {
        if (s.points.empty()) continue;
        std::string pts;
        for (const auto& [p, v] : s.points) pts += fmt::format("{:.1f},{:.1f} ", px(p), py(v));
        svg += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", pts,
                           s.color, s.dash.empty() ? "" : fmt::format(" stroke-dasharray=\"{}\"", s.dash));
        if (s.dash.empty()) {
          for (const auto& [p, v] : s.points) {
            svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"><title>{} {}: {}</title>"
                               "</circle>\n",
                               px(p), py(v), s.color, escape(s.transport), escape(format_bytes(p)),
                               escape(row == 0 ? format_rate(v) + " msgs/s" : micros_label(std::round(v))));
          }
        }
      }
    }
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace palm::tools
