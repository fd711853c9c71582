// `limpq report`: the page is self-contained and its charts render in a real
// browser (headless Chromium, installed by scripts/setup.sh).
#include "limpq/deploy/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "limpq/util/atomic_file.h"
#include "limpq/util/subprocess.h"
#include "support/test_support.h"

namespace limpq::deploy {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ReportTest : public limpq::testing::SeededTest {
 protected:
  // Four searchable layers between two fixed ones, and a policy over them.
  static ReportInputs inputs() {
    ReportInputs in;
    in.indicators.model = "toy";
    in.indicators.input_shape = {1, 8, 8};
    in.indicators.candidates = {4, 3, 2};
    in.indicators.layers.push_back({"first", "conv", false, 1000, 10, {}, {}, std::nullopt});
    in.policy.model = "toy";
    in.policy.fixed.push_back({"first", {8, 8}});
    for (int i = 0; i < 4; ++i) {
      quant::IndicatorLayer l{"block" + std::to_string(i) + ".conv", "conv", true, 50000 * (i + 1), 1000 * (i + 1),
                              {}, {}, std::nullopt};
      for (int64_t b : in.indicators.candidates) {
        l.weight_steps[b] = (i + 1.0) / static_cast<double>(1 << b);
        l.act_steps[b] = 2.0 / static_cast<double>(1 << b);
      }
      in.indicators.layers.push_back(l);
      in.policy.layers.push_back({l.name, {2 + i % 3, 4 - i % 3}});
    }
    in.indicators.layers.push_back({"fc<&>", "linear", false, 640, 640, {}, {}, std::nullopt});
    in.policy.fixed.push_back({"fc<&>", {8, 8}});
    in.bitops_budget = "W3A3";
    in.accuracy = {{"full precision", 93.1, 0, 0}, {"uniform W3A3", 92.0, 1, 1}, {"limpq policy", 92.4, 1, 1}};
    return in;
  }
};

TEST_F(ReportTest, PageIsSelfContainedWithEveryChart) {
  const std::string html = render_report(inputs());
  for (const char* id : {"chart-bits", "chart-indicators", "chart-pareto", "chart-budget", "chart-accuracy"}) {
    EXPECT_THAT(html, HasSubstr(std::string("id=\"") + id + "\"")) << id;
  }
  // Offline: no external resources of any kind.
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  // Names are escaped; every layer is listed with its bits.
  EXPECT_THAT(html, HasSubstr("fc&lt;&amp;&gt; (fixed)"));
  EXPECT_THAT(html, Not(HasSubstr("fc<&>")));
  EXPECT_THAT(html, HasSubstr("<td>block3.conv</td><td>2</td><td>4</td>"));
  EXPECT_THAT(html, HasSubstr("chosen policy"));
  EXPECT_THAT(html, HasSubstr("92.40%"));
}

// The Pareto chart marks uniform precision at the budget next to the
// chosen policy, also when the budget's weight and activation bits differ.
TEST_F(ReportTest, ParetoChartMarksTheBudgetsUniformPrecision) {
  ReportInputs in = inputs();
  in.bitops_budget = "W2A3";
  const std::string html = render_report(in);
  const std::string pareto = html.substr(html.find("id=\"chart-pareto\""));
  for (const char* name : {"uniform W2A2", "uniform W3A3", "uniform W4A4", "uniform W2A3"}) {
    EXPECT_THAT(pareto, HasSubstr(name)) << name;
  }
  EXPECT_THAT(pareto, HasSubstr("budget W2A3"));
  in.bitops_budget = "W3A3";
  const std::string same = render_report(in);
  EXPECT_THAT(same.substr(same.find("id=\"chart-pareto\"")), Not(HasSubstr("uniform W2A3")));
}

TEST_F(ReportTest, PolicyMustMatchTheIndicators) {
  ReportInputs in = inputs();
  in.policy.layers.pop_back();
  EXPECT_THAT([&] { render_report(in); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("no bits for layer 'block3.conv'")));
  in = inputs();
  in.policy.layers[0].second = {6, 6};
  EXPECT_THAT([&] { render_report(in); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("no indicator at 6 bits")));
}

TEST_F(ReportTest, DrawsTheCriterionTheSearchUsed) {
  ReportInputs in = inputs();
  // Without statistics the file's default is the paper's step, alpha 2.
  EXPECT_THAT(render_report(in), HasSubstr("criterion step, alpha 2,"));
  for (auto& l : in.indicators.layers) {
    if (l.searchable) l.stats = quant::TensorStats{0.5, 1.0, 0, 0, 64, {}, {}};
  }
  // With them, limpq search's default: the step relative to the tensor's rms.
  EXPECT_THAT(render_report(in), HasSubstr("criterion relative, alpha 0.25,"));
  in.criterion = "noise";
  in.alpha = 3.0;
  EXPECT_THAT(render_report(in), HasSubstr("criterion noise, alpha 3,"));
  in.criterion = "magic";
  EXPECT_THAT([&] { render_report(in); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("magic")));
}

TEST_F(ReportTest, ReadsARunFolder) {
  const ReportInputs in = inputs();
  const std::string dir = temp_path("run");
  std::filesystem::create_directories(dir + "/indicators");
  quant::write_indicators(dir + "/indicators/indicators.json", in.indicators);
  quant::write_policy(dir + "/policy.json", in.policy);
  util::write_file_atomic(dir + "/summary.json",
                          R"([{"name": "full precision", "top1": 93.1}, {"name": "uniform W3A3", "top1": 92.0},)"
                          R"( {"name": "limpq policy", "top1": 92.4, "bitops": 1e6}])");
  util::write_file_atomic(dir + "/search.json", R"({"criterion": "step", "alpha": 1.5, "fixed_bits": 6})");
  const ReportInputs read = run_report_inputs(dir);
  EXPECT_EQ(read.criterion, "step");
  EXPECT_EQ(read.alpha, 1.5);
  EXPECT_EQ(read.fixed_bits, 6);
  EXPECT_EQ(read.bitops_budget, "W3A3");  // from the uniform row
  ASSERT_EQ(read.accuracy.size(), 3u);
  EXPECT_EQ(read.accuracy[2].top1, 92.4);
  const std::string page = util::read_file(write_run_report(dir));
  EXPECT_THAT(page, HasSubstr("criterion step, alpha 1.5, fixed layers at 6 bits"));
  EXPECT_THAT(page, HasSubstr("92.40%"));

  util::write_file_atomic(dir + "/search.json", R"({"alpha": "two"})");
  EXPECT_THAT([&] { run_report_inputs(dir); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("search.json': a field has the wrong type")));
}

TEST_F(ReportTest, ChartsRenderInHeadlessChromium) {
  const std::string path = temp_path("report.html");
  util::write_file_atomic(path, render_report(inputs()));
  const util::ProcessResult r = util::run_process({"chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                                   "--virtual-time-budget=2000", "--dump-dom", "file://" + path});
  ASSERT_EQ(r.exit_code, 0) << "headless Chromium failed (scripts/setup.sh installs the chromium package): "
                            << r.output;
  // The page's own script counts the charts the browser laid out with a size.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("data-charts-drawn=\"([0-9]+)\""))) << r.output;
  EXPECT_EQ(m[1], "5");
}

}  // namespace
}  // namespace limpq::deploy
