#include "limpq/train/pipeline.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "limpq/quant/indicators.h"
#include "limpq/search/criterion.h"
#include "limpq/train/sensitivity.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/text.h"

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
// kept it (no file).
double stage_seconds(const std::string& path) {
  if (!util::file_exists(path)) return 0;
  const auto seconds = util::parse_double(util::first_line(util::read_file(path)));
  TORCH_CHECK(seconds && *seconds >= 0, "pipeline: '", path,
              "' should hold the seconds its stage took; it does not (delete the stage's folder to redo it)");
  return *seconds;
}

// The stage's final model on the test set, as the stage measured it
// ("test.json" beside its marker); count 0 when the stage finished before
// limpq kept it (no file).
EvalResult stage_test(const std::string& dir) {
  const std::string path = join(dir, "test.json");
  EvalResult test;
  if (!util::file_exists(path)) return test;
  const auto j = nlohmann::json::parse(util::read_file(path), nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(!j.is_discarded() && j.is_object() && j.contains("top1") && j.contains("count"), "pipeline: '", path,
              "' is not the test result its stage wrote (delete the stage's folder to redo it)");
  test.loss = j.value("loss", 0.0);
  test.top1 = j.value("top1", 0.0);
  test.top5 = j.value("top5", 0.0);
  test.count = j.value("count", int64_t{0});
  return test;
}

// What a stage reports to the pipeline's table of times.
struct StageRun {
  double seconds = 0;
  bool reused = false;
};

// Runs one training stage unless it has finished before, and resumes it when
// a checkpoint of an interrupted run exists. The stage's key (its resolved
// configuration plus `inputs`, e.g. the policy it trains under) is stored
// with the finished marker; a finished stage with another key is an error,
// never silently reused.
TrainResult train_stage(const TrainConfig& config, StageRun& run, const std::string& inputs = "") {
  const std::string dir = config.run.out_dir();
  const std::string done = join(dir, "done");
  const nlohmann::ordered_json key = stage_key(config, inputs);
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
    run = {stage_seconds(join(dir, "seconds")), true};
    return result;
  }
  const auto start = std::chrono::steady_clock::now();
  TrainHooks hooks;
  hooks.evaluate_every_candidate = false;  // the pipeline shows the stage's first candidate only
  result = run_train(config, /*resume=*/util::file_exists(join(dir, "checkpoint.pt")), hooks);
  run = {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), false};
  util::write_file_atomic(join(dir, "seconds"), fmt::format("{:.3f}\n", run.seconds));
  util::write_file_atomic(join(dir, "test.json"), result.test.to_json().dump(2) + "\n");
  util::write_file_atomic(done, key.dump(2) + "\n");
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
                              const std::string& method, StageRun& run) {
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
  const std::string seconds = join(out, method + ".seconds");
  const nlohmann::ordered_json key = sensitivity_key(sc);
  if (util::file_exists(done) && util::file_exists(path)) {
    TORCH_CHECK(finished_with(done, key, sensitivity_key(SensitivityConfig())), "pipeline: the finished criterion '", path,
                "' was measured with another configuration or input; delete it to redo it");
    fmt::print(stderr, "reusing '{}'\n", path);
    run = {stage_seconds(seconds), true};
    return path;
  }
  const auto start = std::chrono::steady_clock::now();
  quant::write_indicators(path, run_sensitivity(sc));
  run = {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), false};
  util::write_file_atomic(seconds, fmt::format("{:.3f}\n", run.seconds));
  util::write_file_atomic(done, key.dump(2) + "\n");
  return path;
}

// A stage's model on the test set with its policy's cost: the stage's own
// final evaluation when it has one (the same model and test images), else
// evaluated afresh (given weights, or a stage from an older limpq).
EvalResult test_of(const TrainResult& stage, const PipelineConfig& config) {
  const Checkpoint ckpt = load_checkpoint(stage.checkpoint);
  if (stage.test.count == 0) {
    fmt::print(stderr, "'{}' has no test result of its stage (given weights, or a stage of an older limpq): "
               "evaluating it\n", stage.checkpoint);
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

namespace {

// What the stages hand each other.
struct PipelineState {
  PipelineConfig config;
  TrainConfig base;  // data, model and run options every training stage shares
  std::string out;
  bool measured = false;  // search.criterion is a measured one (drop, hessian): no joint training
  TrainResult fp, policy;
  std::optional<TrainResult> uniform;
  PipelineResult result;
};

std::string criterion_title(const PipelineState& s) {
  return s.measured ? "sensitivity criterion (" + s.config.search.criterion() + ")" : "joint indicator training";
}

StageRun full_precision_stage(PipelineState& s) {
  TrainConfig fp = s.base;
  fp.optim = s.config.train;
  fp.run.out_dir(join(s.out, "fp"));
  StageRun run;
  s.fp = train_stage(fp, run);
  return run;
}

StageRun criterion_stage(PipelineState& s) {
  StageRun run;
  const std::string& fp = s.fp.checkpoint;
  if (s.measured) {
    s.result.indicators = sensitivity_stage(s.config, fp, s.config.search.criterion(), run);
    return run;
  }
  TrainConfig ind = s.base;
  ind.model.weights(fp);
  ind.optim = s.config.indicators.optim;
  ind.indicators = s.config.indicators.indicators;
  ind.joint_indicators = true;
  ind.run.out_dir(join(s.out, "indicators"));
  s.result.indicators = train_stage(ind, run, fp).indicators;
  return run;
}

StageRun search_stage(PipelineState& s) {
  PipelineResult& r = s.result;
  const quant::Indicators indicators = quant::read_indicators(r.indicators);
  search::SearchOptions so = s.config.search;
  so.fixed_bits(s.config.finetune.quantize.fixed_bits());
  if (s.measured) so.criterion("step");  // the measured values, searched as they are
  r.search = search::run_search(indicators, so);
  r.budget_bitops = r.search.target_bitops;
  r.budget_size_bits = r.search.target_size_bits;
  r.policy = join(s.out, "policy.json");
  quant::write_policy(r.policy, r.search.policy);
  write_search_record(join(s.out, "search.json"), s.config, r);
  fmt::print(stderr, "criterion {}, alpha {:g}: ", s.measured ? s.config.search.criterion() : r.search.criterion,
             r.search.alpha);
  fmt::print(stderr, "{} policy: {:.4f} GBitOps, {:.1f} KB weights, objective {:.6g} ({:.2f} ms), {} erased points{}\n",
             search::to_string(r.search.solve.status), r.search.achieved_bitops / 1e9, r.search.achieved_size_bits / 8e3,
             r.search.objective, r.search.solve.seconds * 1e3, r.search.erased.size(),
             r.search.erased_used.empty()
                 ? std::string()
                 : fmt::format(" ({} of them forced into the policy by the budget)", r.search.erased_used.size()));
  return {r.search.solve.seconds, false};
}

TrainConfig finetune_config(const PipelineState& s) {
  TrainConfig ft = s.base;
  ft.model.weights(s.fp.checkpoint);
  ft.optim = s.config.finetune.optim;
  ft.quant.quantize(s.config.finetune.quantize);
  ft.quant.quantize().fixed_layers(s.config.indicators.indicators.fixed_layers());
  return ft;
}

StageRun finetune_policy_stage(PipelineState& s) {
  TrainConfig ft = finetune_config(s);
  ft.quant.policy(s.result.policy);
  ft.run.out_dir(join(s.out, "finetune_policy"));
  StageRun run;
  s.policy = train_stage(ft, run, util::read_file(s.result.policy));
  return run;
}

bool compares_uniform(const PipelineState& s) {
  return s.config.finetune.compare_uniform && search::uniform_budget(s.config.search.bitops()).has_value();
}

StageRun finetune_uniform_stage(PipelineState& s) {
  TrainConfig uni = finetune_config(s);
  uni.quant.uniform(s.config.search.bitops());
  uni.run.out_dir(join(s.out, "finetune_uniform"));
  StageRun run;
  s.uniform = train_stage(uni, run);
  return run;
}

StageRun evaluation_stage(PipelineState& s) {
  const auto start = std::chrono::steady_clock::now();
  PipelineResult& r = s.result;
  auto seconds = [&r](std::initializer_list<Stage> stages) {
    double total = 0;
    for (const auto& t : r.stages) {
      if (std::find(stages.begin(), stages.end(), t.stage) != stages.end()) total += t.seconds;
    }
    return total;
  };
  r.rows.push_back({"full precision", s.fp.checkpoint, test_of(s.fp, s.config), seconds({Stage::kFullPrecision})});
  if (s.uniform) {
    r.rows.push_back({"uniform " + s.config.search.bitops(), s.uniform->checkpoint, test_of(*s.uniform, s.config),
                      seconds({Stage::kFinetuneUniform})});
  }
  r.rows.push_back({s.measured ? s.config.search.criterion() + " policy" : "limpq policy", s.policy.checkpoint,
                    test_of(s.policy, s.config), seconds({Stage::kCriterion, Stage::kSearch, Stage::kFinetunePolicy})});
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), false};
}

// The pipeline, in order. A stage whose `runs` is false is skipped (given
// full-precision weights; no uniform comparison).
struct StageEntry {
  Stage stage;
  std::string (*title)(const PipelineState&);
  StageRun (*run)(PipelineState&);
  bool (*runs)(const PipelineState&);
};

bool always(const PipelineState&) { return true; }

const std::vector<StageEntry>& stage_table() {
  static const std::vector<StageEntry> table = {
      {Stage::kFullPrecision, [](const PipelineState&) { return std::string("full-precision training"); },
       full_precision_stage, [](const PipelineState& s) { return s.config.model.weights().empty(); }},
      {Stage::kCriterion, criterion_title, criterion_stage, always},
      {Stage::kSearch, [](const PipelineState&) { return std::string("policy search"); }, search_stage, always},
      {Stage::kFinetunePolicy, [](const PipelineState&) { return std::string("fine-tuning under the searched policy"); },
       finetune_policy_stage, always},
      {Stage::kFinetuneUniform,
       [](const PipelineState& s) { return "fine-tuning at uniform " + s.config.search.bitops() + " (comparison)"; },
       finetune_uniform_stage, compares_uniform},
      {Stage::kEvaluation, [](const PipelineState&) { return std::string("evaluation on the test set"); },
       evaluation_stage, always},
  };
  return table;
}

void write_summary(const std::string& path, const PipelineResult& result) {
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
  util::write_file_atomic(path, summary.dump(2) + "\n");
}

}  // namespace

PipelineResult run_pipeline(PipelineConfig config) {
  PipelineState s;
  // Checked before the run folder is made: a missing file leaves nothing behind.
  config.model = models::resolve_model_options(config.model);
  const std::string& criterion = config.search.criterion();
  s.measured = criterion == "drop" || criterion == "hessian";
  TORCH_CHECK(s.measured || criterion.empty() || search::find_criterion(criterion).has_value(),
              "pipeline: search.criterion must be one of ", search::criterion_names(), ", drop, hessian, got '",
              criterion, "'");
  s.config = std::move(config);
  s.out = s.config.run.out_dir();
  s.base.data = s.config.data;
  s.base.model = s.config.model;
  s.base.run = s.config.run;
  s.fp.checkpoint = s.config.model.weights();  // replaced by the full-precision stage when it runs
  util::make_directories(s.out);

  std::vector<const StageEntry*> stages;
  for (const auto& entry : stage_table()) {
    if (entry.runs(s)) stages.push_back(&entry);
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    const std::string title = stages[i]->title(s);
    fmt::print(stderr, "\n== {}/{} {}\n", i + 1, stages.size(), title);
    const StageRun run = stages[i]->run(s);
    s.result.stages.push_back({stages[i]->stage, title, run.seconds, run.reused});
  }
  write_summary(join(s.out, "summary.json"), s.result);
  return s.result;
}

nlohmann::ordered_json PipelineResult::to_json() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& row : rows) {
    auto j = row.test.to_json();
    j["name"] = row.name;
    j["train_seconds"] = row.train_seconds;
    out.push_back(j);
  }
  return {{"policy", policy}, {"rows", out}};
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
