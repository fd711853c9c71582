#include "limpq/train/pipeline.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "limpq/quant/indicators.h"
#include "limpq/search/criterion.h"
#include "limpq/train/sensitivity.h"
#include "limpq/util/atomic_file.h"

namespace limpq::train {
namespace {

namespace fs = std::filesystem;

std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Whether a finished stage's stored key describes the stage as configured
// now: every field it stored has the same value, and every field it lacks
// (an option added to limpq since the stage ran) is at its default now,
// `defaults` being the key of a default configuration. A changed default of
// an existing option still refuses the stage: the stored key holds the value
// it ran with.
bool key_matches(const nlohmann::json& stored, const nlohmann::json& current, const nlohmann::json* defaults) {
  if (!stored.is_object() || !current.is_object()) return stored == current;
  for (const auto& [name, value] : stored.items()) {
    const nlohmann::json* inner = defaults != nullptr && defaults->contains(name) ? &(*defaults)[name] : nullptr;
    if (!current.contains(name) || !key_matches(value, current[name], inner)) return false;
  }
  for (const auto& [name, value] : current.items()) {
    if (stored.contains(name)) continue;
    if (defaults == nullptr || !defaults->contains(name) || (*defaults)[name] != value) return false;
  }
  return true;
}

bool finished_with(const std::string& done, const nlohmann::ordered_json& key, const nlohmann::ordered_json& defaults) {
  const auto stored = nlohmann::json::parse(util::read_file(done), nullptr, /*allow_exceptions=*/false);
  const nlohmann::json current = key;
  const nlohmann::json default_key = defaults;
  return !stored.is_discarded() && key_matches(stored, current, &default_key);
}

nlohmann::ordered_json stage_key(TrainConfig config, const std::string& inputs) {
  return {{"config", config.to_json()}, {"inputs", inputs}};
}

// The time a finished stage took, kept beside its marker ("seconds"), so a
// reused stage still reports it; 0 when the stage finished before limpq
// kept it.
double stage_seconds(const std::string& dir) {
  const std::string path = join(dir, "seconds");
  if (!util::file_exists(path)) return 0;
  try {
    return std::stod(util::read_file(path));
  } catch (const std::exception&) {
    return 0;
  }
}

// The stage's final model on the test set, as the stage measured it
// ("test.json" beside its marker); count 0 when the stage finished before
// limpq kept it.
EvalResult stage_test(const std::string& dir) {
  const std::string path = join(dir, "test.json");
  EvalResult test;
  if (!util::file_exists(path)) return test;
  const auto j = nlohmann::json::parse(util::read_file(path), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return test;
  test.loss = j.value("loss", 0.0);
  test.top1 = j.value("top1", 0.0);
  test.top5 = j.value("top5", 0.0);
  test.count = j.value("count", int64_t{0});
  return test;
}

// Runs one training stage unless it has finished before, and resumes it when
// a checkpoint of an interrupted run exists. The stage's key (its resolved
// configuration plus `inputs`, e.g. the policy it trains under) is stored
// with the finished marker; a finished stage with another key is an error,
// never silently reused.
TrainResult run_stage(const std::string& title, TrainConfig config, std::vector<StageTime>& times,
                      const std::string& inputs = "") {
  const std::string dir = config.run.out_dir();
  const std::string done = join(dir, "done");
  const nlohmann::ordered_json key = stage_key(config, inputs);
  fmt::print(stderr, "\n== {}\n", title);
  TrainResult result;
  if (util::file_exists(done)) {
    TORCH_CHECK(finished_with(done, key, stage_key(TrainConfig(), "")), "pipeline: the finished stage in '", dir,
                "' was run with another configuration or input; delete that folder to redo it, or choose another "
                "run.out_dir");
    fmt::print(stderr, "reusing the finished stage in '{}'\n", dir);
    result.completed = true;
    result.checkpoint = join(dir, "checkpoint.pt");
    result.test = stage_test(dir);
    if (config.joint_indicators) result.indicators = join(dir, "indicators.json");
    times.push_back({title.substr(title.find(' ') + 1), stage_seconds(dir), true});
    return result;
  }
  const auto start = std::chrono::steady_clock::now();
  TrainHooks hooks;
  hooks.evaluate_every_candidate = false;  // the pipeline shows the stage's first candidate only
  result = run_train(config, /*resume=*/util::file_exists(join(dir, "checkpoint.pt")), hooks);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  util::write_file_atomic(join(dir, "seconds"), fmt::format("{:.3f}\n", seconds));
  util::write_file_atomic(join(dir, "test.json"), result.test.to_json().dump(2) + "\n");
  util::write_file_atomic(done, key.dump(2) + "\n");
  times.push_back({title.substr(title.find(' ') + 1), seconds, false});
  return result;
}

nlohmann::ordered_json sensitivity_key(SensitivityConfig sc) {
  return {{"data", util::to_json(sc.data)},
          {"model", util::to_json(sc.model)},
          {"sensitivity", util::to_json(sc.sensitivity)},
          {"seed", sc.seed}};
}

// The criterion of `limpq sensitivity --method <method>` for the pipeline's
// model, written to out/<method>.json unless a finished one with the same
// inputs is there (a finished one with other inputs is an error, as for the
// training stages).
std::string sensitivity_stage(const PipelineConfig& config, const std::string& fp_checkpoint,
                              const std::string& method) {
  SensitivityConfig sc;
  sc.data = config.data;
  sc.model = config.model;
  sc.model.weights(fp_checkpoint);
  sc.sensitivity.method(method)
      .candidates(config.indicators.indicators.candidates())
      .fixed_layers(config.indicators.indicators.fixed_layers());
  sc.device = config.run.device();
  sc.threads = config.run.threads();
  sc.seed = config.run.seed();
  const std::string out = config.run.out_dir();
  const std::string path = join(out, method + ".json");
  const std::string done = join(out, method + ".done");
  const nlohmann::ordered_json key = sensitivity_key(sc);
  fmt::print(stderr, "\n== 2/4 sensitivity criterion ({})\n", method);
  if (util::file_exists(done) && util::file_exists(path)) {
    TORCH_CHECK(finished_with(done, key, sensitivity_key(SensitivityConfig())), "pipeline: the finished criterion '", path,
                "' was measured with another configuration or input; delete it to redo it");
    fmt::print(stderr, "reusing '{}'\n", path);
    return path;
  }
  quant::write_indicators(path, run_sensitivity(sc));
  util::write_file_atomic(done, key.dump(2) + "\n");
  return path;
}

// A stage's model on the test set with its policy's cost: the stage's own
// final evaluation when it has one (the same model and test images), else
// evaluated afresh (given weights, or a stage from an older limpq).
EvalResult test_of(const TrainResult& stage, const PipelineConfig& config) {
  const Checkpoint ckpt = load_checkpoint(stage.checkpoint);
  if (stage.test.count == 0) {
    return run_eval(ckpt, EvalOptions().device(config.run.device()).threads(config.run.threads()), config.data);
  }
  EvalResult test = stage.test;
  LoadedModel loaded = load_model(ckpt, stage.checkpoint);
  if (loaded.quant) test.cost = models::policy_cost(loaded.quant->layers(), loaded.quant->current_policy());
  return test;
}

// search.json: what the search did, with the budgets and the indicators file
// it read (`limpq report --run` draws the report from it).
void write_search_record(const std::string& path, const PipelineConfig& config, const PipelineResult& result) {
  nlohmann::ordered_json record = result.search.to_json();
  record["indicators"] = result.indicators;
  record["bitops_budget"] = config.search.bitops();
  record["cr_budget"] = config.search.cr();
  record["size_mb_budget"] = config.search.size_mb();
  record["fixed_bits"] = config.finetune.quantize.fixed_bits();
  util::write_file_atomic(path, record.dump(2) + "\n");
}

}  // namespace

std::vector<util::ConfigSection> PipelineConfig::sections() {
  return {util::section("data", data),           util::section("model", model),
          util::section("train", train),         util::section("run", run),
          util::section("indicators", indicators), util::section("search", search),
          util::section("finetune", finetune)};
}

PipelineConfig load_pipeline_config(const std::string& path) {
  PipelineConfig config;
  std::string names;
  for (const auto& s : config.sections()) names += (names.empty() ? "" : ", ") + s.name;
  TORCH_CHECK(util::load_config(path, config.sections()) > 0, "run: config '", path,
              "' has no section; give at least one of ", names, " (an empty config would run the whole default "
              "pipeline)");
  try {
    models::resolve_model_options(config.model);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "run: config '", path, "': ", e.msg());
  }
  return config;
}

PipelineResult run_pipeline(PipelineConfig config) {
  // Checked before the run folder is made: a missing file leaves nothing behind.
  config.model = models::resolve_model_options(config.model);
  const std::string out = config.run.out_dir();
  util::make_directories(out);
  PipelineResult result;

  TrainConfig base;
  base.data = config.data;
  base.model = config.model;
  base.run = config.run;

  // 1. Full precision.
  TrainResult fp_stage;
  fp_stage.checkpoint = config.model.weights();
  if (fp_stage.checkpoint.empty()) {
    TrainConfig fp = base;
    fp.optim = config.train;
    fp.run.out_dir(join(out, "fp"));
    fp_stage = run_stage("1/4 full-precision training", fp, result.stages);
  }
  const std::string& fp_checkpoint = fp_stage.checkpoint;

  // 2. Indicators, or a measured criterion (the baselines).
  const std::string criterion = config.search.criterion();
  const bool measured = criterion == "drop" || criterion == "hessian";
  if (measured) {
    result.indicators = sensitivity_stage(config, fp_checkpoint, criterion);
  } else {
    TORCH_CHECK(criterion.empty() || search::find_criterion(criterion).has_value(),
                "pipeline: search.criterion must be one of ", search::criterion_names(), ", drop, hessian, got '",
                criterion, "'");
    TrainConfig ind = base;
    ind.model.weights(fp_checkpoint);
    ind.optim = config.indicators.optim;
    ind.indicators = config.indicators.indicators;
    ind.joint_indicators = true;
    ind.run.out_dir(join(out, "indicators"));
    result.indicators = run_stage("2/4 joint indicator training", ind, result.stages, fp_checkpoint).indicators;
  }

  // 3. Search.
  fmt::print(stderr, "\n== 3/4 policy search\n");
  const quant::Indicators indicators = quant::read_indicators(result.indicators);
  search::SearchOptions so = config.search;
  so.fixed_bits(config.finetune.quantize.fixed_bits());
  if (measured) so.criterion("step");  // the measured values, searched as they are
  result.search = search::run_search(indicators, so);
  result.stages.push_back({"policy search", result.search.solve.seconds, false});
  result.budget_bitops = result.search.target_bitops;
  result.budget_size_bits = result.search.target_size_bits;
  result.policy = join(out, "policy.json");
  quant::write_policy(result.policy, result.search.policy);
  write_search_record(join(out, "search.json"), config, result);
  fmt::print(stderr, "criterion {}, alpha {:g}: ", measured ? criterion : result.search.criterion, result.search.alpha);
  fmt::print(stderr, "{} policy: {:.4f} GBitOps, {:.1f} KB weights, objective {:.6g} ({:.2f} ms), {} erased points{}\n",
             search::to_string(result.search.solve.status), result.search.achieved_bitops / 1e9,
             result.search.achieved_size_bits / 8e3, result.search.objective, result.search.solve.seconds * 1e3,
             result.search.erased.size(),
             result.search.erased_used.empty()
                 ? std::string()
                 : fmt::format(" ({} of them forced into the policy by the budget)", result.search.erased_used.size()));

  // 4. Fine-tuning: the searched policy, and uniform precision at the budget.
  TrainConfig ft = base;
  ft.model.weights(fp_checkpoint);
  ft.optim = config.finetune.optim;
  ft.quant.quantize(config.finetune.quantize);
  ft.quant.quantize().fixed_layers(config.indicators.indicators.fixed_layers());
  ft.quant.policy(result.policy);
  ft.run.out_dir(join(out, "finetune_policy"));
  const TrainResult policy_stage =
      run_stage("4/4 fine-tuning under the searched policy", ft, result.stages, util::read_file(result.policy));

  const std::string& bitops = config.search.bitops();
  std::optional<TrainResult> uniform_stage;
  if (config.finetune.compare_uniform && search::uniform_budget(bitops)) {
    TrainConfig uni = ft;
    uni.quant.policy("");
    uni.quant.uniform(bitops);
    uni.run.out_dir(join(out, "finetune_uniform"));
    uniform_stage = run_stage("4/4 fine-tuning at uniform " + bitops + " (comparison)", uni, result.stages);
  }

  fmt::print(stderr, "\n== evaluation on the test set\n");
  const auto start = std::chrono::steady_clock::now();
  // The seconds of the stages named, as recorded above.
  auto seconds_of = [&](std::initializer_list<const char*> prefixes) {
    double total = 0;
    for (const auto& s : result.stages) {
      for (const char* p : prefixes) {
        if (s.name.rfind(p, 0) == 0) total += s.seconds;
      }
    }
    return total;
  };
  result.rows.push_back({"full precision", fp_checkpoint, test_of(fp_stage, config), seconds_of({"full-precision"})});
  if (uniform_stage) {
    result.rows.push_back({"uniform " + bitops, uniform_stage->checkpoint, test_of(*uniform_stage, config),
                           seconds_of({"fine-tuning at uniform"})});
  }
  result.rows.push_back({measured ? criterion + " policy" : "limpq policy", policy_stage.checkpoint,
                         test_of(policy_stage, config),
                         seconds_of({"joint indicator", "policy search", "fine-tuning under"})});
  result.stages.push_back(
      {"evaluation", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), false});

  nlohmann::ordered_json summary = nlohmann::ordered_json::array();
  for (const auto& row : result.rows) {
    auto j = row.test.to_json();
    j["name"] = row.name;
    j["checkpoint"] = row.checkpoint;
    j["train_seconds"] = row.train_seconds;
    j["budget_bitops"] = result.budget_bitops;
    j["budget_size_bytes"] = result.budget_size_bits / 8;
    summary.push_back(j);
  }
  util::write_file_atomic(join(out, "summary.json"), summary.dump(2) + "\n");
  return result;
}

namespace {

std::string duration_text(double seconds) {
  if (seconds < 1) return fmt::format("{:.2f} s", seconds);
  if (seconds < 60) return fmt::format("{:.0f} s", seconds);
  return fmt::format("{}m{:02d}s", static_cast<int64_t>(seconds) / 60, static_cast<int>(seconds) % 60);
}

}  // namespace

std::string pipeline_table(const PipelineResult& result) {
  std::string out = fmt::format("\n{:<24} {:>20} {:>22} {:>8} {:>8} {:>9}\n", "model", "GBitOps (of budget)",
                                "weights KB (vs 32-bit)", "top1", "top5", "trained");
  for (const auto& row : result.rows) {
    const auto& t = row.test;
    std::string bitops = "32/32", size = "32-bit";
    if (t.cost) {
      bitops = result.budget_bitops > 0
                   ? fmt::format("{:.4f} ({:.0f}%)", t.cost->bitops / 1e9, 100 * t.cost->bitops / result.budget_bitops)
                   : fmt::format("{:.4f}", t.cost->bitops / 1e9);
      size = result.budget_size_bits > 0
                 ? fmt::format("{:.1f} ({:.0f}% of budget)", t.cost->size_bits / 8e3,
                               100 * t.cost->size_bits / result.budget_size_bits)
                 : fmt::format("{:.1f} ({:.1f}x smaller)", t.cost->size_bits / 8e3, t.cost->fp_size_bits / t.cost->size_bits);
    }
    out += fmt::format("{:<24} {:>20} {:>22} {:>7.2f}% {:>7.2f}% {:>9}\n", row.name, bitops, size, t.top1, t.top5,
                       duration_text(row.train_seconds));
  }
  if (result.budget_bitops > 0) out += fmt::format("budget: {:.4f} GBitOps\n", result.budget_bitops / 1e9);
  std::string stages;
  for (const auto& s : result.stages) {
    stages += fmt::format("{}{} {}{}", stages.empty() ? "" : ", ", s.name, duration_text(s.seconds),
                          s.reused ? " (reused)" : "");
  }
  out += "stages: " + stages + "\n";
  return out;
}

}  // namespace limpq::train
