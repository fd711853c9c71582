"""Runs the limpq CLI on bad inputs and writes the table of docs/errors.md:
each row is the input, the command, and the first line of the error the user
sees (captured, not typed in), plus the unit test that checks that message.

    /usr/bin/python3 tests/tools/errors_catalogue.py build/limpq docs/errors.md
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

LIMPQ = os.path.abspath(sys.argv[1])
OUT = sys.argv[2]
TMP = tempfile.mkdtemp(prefix="limpq_errors_")


def path(*parts):
    return os.path.join(TMP, *parts)


def write(name, data):
    p = path(name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return p


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def mnist(folder, n=4, labels=None, images=None):
    labels = labels if labels is not None else idx([n], [i % 10 for i in range(n)])
    images = images if images is not None else idx([n, 28, 28], [0] * (n * 784))
    for split in ("train", "t10k"):
        write(f"{folder}/{split}-images-idx3-ubyte", images)
        write(f"{folder}/{split}-labels-idx1-ubyte", labels)
    return path(folder)


def run(args):
    p = subprocess.run([LIMPQ] + args, capture_output=True, text=True, cwd=TMP)
    assert p.returncode != 0, f"expected a failure: {args}\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    # From "limpq: error"; a command line CLI11 refuses (a flag of the wrong
    # type) prints its own message instead, from the first line.
    start = next((i for i, l in enumerate(lines) if l.startswith("limpq: error")), 0)
    # Multi-line messages (a policy's list of problems) are joined with " / ".
    return " / ".join(l.strip() for l in lines[start:]).replace(TMP + "/", "").replace(TMP, "/tmp/work")


rows = []


def case(what, args, test, shown=None):
    message = run(args)
    rows.append((what, shown or " ".join(args).replace(TMP + "/", ""), message, test))


good = mnist("good")
train = ["train", "--threads", "1", "--progress", "false", "--epochs", "1", "--batch-size", "2"]

# Data.
case("dataset folder missing", train + ["--dataset", "mnist", "--root", path("nowhere"), "--out-dir", path("r0")],
     "ReadersTest.DatasetRegistryRejectsUnknownNamesAndMissingRoots")
case("IDX file with a wrong magic number", train + ["--dataset", "mnist", "--root",
     mnist("magic", images=b"\x01\x02\x08\x03" + bytes(12 + 4 * 784)), "--out-dir", path("r1")],
     "ReadersTest.IdxWrongMagicIsNamed")
case("IDX file cut short", train + ["--dataset", "mnist", "--root",
     mnist("short", images=idx([4, 28, 28], [0] * 784 * 4)[:-100]), "--out-dir", path("r2")],
     "ReadersTest.IdxTruncatedAndTrailingData")
gz = path("gz")
os.makedirs(gz, exist_ok=True)
for split in ("train", "t10k"):
    write(f"gz/{split}-images-idx3-ubyte.gz", gzip.compress(idx([4, 28, 28], [0] * 784 * 4))[:-20])
    write(f"gz/{split}-labels-idx1-ubyte", idx([4], [1, 2, 3, 4]))
case("gzip-compressed IDX cut short", train + ["--dataset", "mnist", "--root", gz, "--out-dir", path("r3")],
     "ReadersTest.TruncatedGzipIsDetected")
case("label outside the classes", train + ["--dataset", "mnist", "--root",
     mnist("label", labels=idx([4], [1, 2, 12, 3])), "--out-dir", path("r4")], "ReadersTest.ImageAndLabelCountsMustAgree")
case("image and label counts differ", train + ["--dataset", "mnist", "--root",
     mnist("count", labels=idx([3], [1, 2, 3])), "--out-dir", path("r5")], "ReadersTest.ImageAndLabelCountsMustAgree")
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    write("cifar/" + name, bytes(3073 * 2 + 5))
case("CIFAR batch not a whole number of records", train + ["--dataset", "cifar10", "--root", path("cifar"),
     "--out-dir", path("r6")], "ReadersTest.CifarTruncatedAndBadLabel")
write("folder/train/cat/1.jpg", b"not a jpeg")
write("folder/val/cat/1.jpg", b"not a jpeg")
case("undecodable JPEG in an image folder", train + ["--dataset", "image-folder", "--root", path("folder"),
     "--out-dir", path("r7")], "ReadersTest.ImageFolderErrorsNameTheFolderOrFile")
case("unknown dataset name", train + ["--dataset", "imagenet21k", "--out-dir", path("r8")],
     "ReadersTest.DatasetRegistryRejectsUnknownNamesAndMissingRoots")
case("unknown optimizer name", train + ["--dataset", "mnist", "--root", good, "--optimizer", "adam",
                                      "--out-dir", path("r8o")],
     "LoopTest.AnUnknownOptimizerIsRefusedByName")

# Configuration.
case("config that is not YAML", ["train", "--config", write("bad.yaml", "train: [1, 2\n")], "OptionsTest.InvalidYamlAndMissingFileAreReported")
case("config with a misspelt section", ["train", "--config", write("sec.yaml", "trian:\n  epochs: 3\n")],
     "OptionsTest.UnknownSectionIsNamed")
case("config with a misspelt key", ["train", "--config", write("key.yaml", "train:\n  epochz: 3\n")],
     "OptionsTest.UnknownKeyIsNamedWithTheKnownOnes")
case("config value of the wrong type", ["train", "--config", write("type.yaml", "train:\n  epochs: many\n")],
     "OptionsTest.WrongTypeNamesFieldAndValue")
case("flag value of the wrong type", ["train", "--epochs", "2.5", "--dataset", "mnist", "--root", good],
     "OptionsTest.BadFlagValueIsRefusedWhileParsing")
case("unknown architecture", train + ["--dataset", "mnist", "--root", good, "--arch", "resnet19",
     "--out-dir", path("r9")], "ModelsTest.UnknownArchitectureAndBadSizesAreNamed")
case("invalid recipe value", ["train", "--threads", "1", "--epochs", "0", "--dataset", "mnist", "--root", good,
     "--out-dir", path("r10")], "TrainerTest.BadRecipeValuesAreNamed")
case("CUDA asked for where there is none", train + ["--dataset", "mnist", "--root", good, "--device", "cuda",
     "--out-dir", path("r11")], "TrainerTest.BadRecipeValuesAreNamed")

# Networks imported from ONNX (exported here by python3-torch).
def onnx_file(name, module, shape):
    import warnings
    import torch
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    p = path(name)
    torch.onnx.export(module.eval(), torch.randn(*shape), p, opset_version=13, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    return p


def torch_sequential_other():
    import torch
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 10))


def onnx_networks():
    import torch
    from export_onnx_models import CumSum

    small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
    return onnx_file("cumsum.onnx", CumSum(), (1, 3, 8, 8)), onnx_file("small.onnx", small, (1, 3, 32, 32))


cumsum_onnx, small_onnx = onnx_networks()
case("file given to --onnx that is not ONNX", ["cost", "--onnx", write("net.onnx", "model:\n  arch: resnet20\n")],
     "OnnxFileTest.NotAnOnnxFile")
case("ONNX network with an op limpq does not import", ["cost", "--onnx", cumsum_onnx],
     "OnnxFileTest.UnsupportedOpNamesTheNodeOpAndOpset")
case("data that does not fit an imported network", train + ["--dataset", "mnist", "--root", good, "--onnx",
     small_onnx, "--out-dir", path("r_onnx")], "OnnxPipelineTest.DataThatDoesNotFitNamesBothShapesAndTheFix")
case("--arch and --onnx together", train + ["--dataset", "mnist", "--root", good, "--onnx", small_onnx, "--arch",
     "resnet20", "--channels", "3", "--image-size", "32", "--out-dir", path("r_onnx2")],
     "OnnxPipelineTest.ArchAndOnnxExcludeEachOther")
case("a config whose model.onnx is missing", ["run", write("missing_onnx.yaml", "model:\n  onnx: missing.onnx\n")],
     "OnnxPipelineTest.MissingOnnxFileNamesItsKeyAndWritesNothing", shown="run missing_onnx.yaml")
case("--onnx naming a missing file", train + ["--dataset", "mnist", "--root", good, "--onnx", "missing.onnx",
     "--out-dir", path("r_onnx3")], "OnnxPipelineTest.MissingOnnxFileNamesItsKeyAndWritesNothing")
other_onnx = onnx_file("other.onnx", torch_sequential_other(), (1, 3, 32, 32))
subprocess.run([LIMPQ] + train + ["--dataset", "mnist", "--root", good, "--onnx", small_onnx, "--channels", "3",
                                  "--image-size", "32", "--out-dir", path("ok_onnx")], capture_output=True, check=True)
case("--weights trained from another ONNX file", train + ["--dataset", "mnist", "--root", good, "--onnx", other_onnx,
     "--channels", "3", "--image-size", "32", "--weights", path("ok_onnx", "checkpoint.pt"), "--out-dir",
     path("r_onnx4")], "OnnxPipelineTest.WeightsOfAnotherOnnxFileNameTheirFile")

# Weights and checkpoints.
case("weights file that is not a PyTorch file", train + ["--dataset", "mnist", "--root", good, "--weights",
     write("junk.pt", b"junk"), "--out-dir", path("r12")], "StateDictTest.GarbageFileIsRefusedWithItsName")
subprocess.run([LIMPQ] + train + ["--dataset", "mnist", "--root", good, "--out-dir", path("ok")],
               capture_output=True, check=True)
ckpt = open(path("ok", "checkpoint.pt"), "rb").read()
case("checkpoint cut short", ["eval", "--checkpoint", write("cut.pt", ckpt[: len(ckpt) // 2])],
     "ReliabilityTest.CorruptTruncatedAndWrongVersionCheckpointsAreRefused")
flipped = bytearray(ckpt)
flipped[len(ckpt) // 2] ^= 0x10
case("checkpoint with one flipped bit", ["eval", "--checkpoint", write("flip.pt", bytes(flipped))],
     "ReliabilityTest.CorruptTruncatedAndWrongVersionCheckpointsAreRefused")
case("policy file that is not there", ["eval", "--checkpoint", path("ok", "checkpoint.pt"), "--policy",
     path("nope.json")], "CliTest.MessagesSayWhatActuallyHappened")
case("report of a run folder that is not there", ["report", "--run", path("nowhere_run")],
     "CliTest.MessagesSayWhatActuallyHappened")
case("weights of another architecture", ["indicators", "--arch", "mobilenet_v2_stem1", "--weights",
     path("ok", "checkpoint.pt"), "--dataset", "mnist", "--root", good, "--out-dir", path("r12b")],
     "ReliabilityTest.WeightsOfAnotherArchitectureNameTheFlagToPass")
case("existing run folder without --resume", train + ["--dataset", "mnist", "--root", good,
     "--out-dir", path("ok")], "TrainerTest.ExistingCheckpointIsNeverOverwrittenWithoutResume")
case("resuming under another policy", ["finetune", "--resume", "--uniform", "W2A2", "--dataset", "mnist", "--root",
     good, "--threads", "1", "--out-dir", path("ok"), "--batch-size", "2", "--epochs", "1"],
     "TrainerTest.FinetunesUnderAPolicyAndResumesIt")

# Policies, indicators, search.
policy = {"format": "limpq.policy/1", "model": "resnet20",
          "layers": {"layer1.0.conv1": {"weight_bits": 9, "act_bits": 3}, "ghost": {"weight_bits": 4, "act_bits": 4}},
          "fixed": {}}
ft = ["finetune", "--dataset", "mnist", "--root", good, "--threads", "1", "--epochs", "1", "--batch-size", "2"]
case("policy with unknown layers, bits out of range, layers missing", ft + ["--policy",
     write("p.json", json.dumps(policy)), "--out-dir", path("r13")], "PolicyTest.EveryProblemIsNamed")
case("policy of another format version", ft + ["--policy", write("v9.json", json.dumps(dict(policy,
     format="limpq.policy/9"))), "--out-dir", path("r14")], "PolicyTest.MalformedFilesAreRefusedByName")
ind_dir = path("ind")
subprocess.run([LIMPQ, "indicators", "--dataset", "mnist", "--root", good, "--threads", "1", "--epochs", "1",
                "--batch-size", "2", "--fraction", "1", "--candidates", "4,2", "--out-dir", ind_dir,
                "--progress", "false"], capture_output=True, check=True)
ind_text = open(os.path.join(ind_dir, "indicators.json")).read()
ind = json.loads(ind_text)
step = next(l for l in ind["layers"] if l["searchable"])["weight_steps"]["4"]
case("indicators file edited by hand (checksum mismatch)", ["search", "--indicators",
     write("edited.json", ind_text.replace(json.dumps(step), json.dumps(step * 2), 1)), "--bitops", "W3A3"],
     "ReliabilityTest.PolicyAndIndicatorFilesCarryAVerifiedChecksum")
bad = json.loads(ind_text)
del bad["checksum"]
next(l for l in bad["layers"] if l["searchable"])["weight_steps"]["4"] = -1
case("indicators with a negative step", ["search", "--indicators", write("neg.json", json.dumps(bad)),
     "--bitops", "W3A3"], "SearchTest.IndicatorsFileErrorsNameTheLayer")
case("search criterion that does not exist", ["search", "--indicators", path("ind", "indicators.json"),
     "--bitops", "W3A3", "--criterion", "curvature"], "CriterionTest.NamesRoundTripAndUnknownOnesAreRejected")
no_stats = json.loads(ind_text)
del no_stats["checksum"]
for l in no_stats["layers"]:
    l.pop("stats", None)
case("scale-free criterion on indicators without statistics", ["search", "--indicators",
     write("no_stats.json", json.dumps(no_stats)), "--bitops", "W3A3", "--criterion", "fisher"],
     "CriterionTest.ScaleFreeFormsNeedTheStatistics")
case("measured drop without a validation split", ["sensitivity", "--method", "drop", "--dataset", "mnist", "--root",
     good, "--threads", "1", "--out", path("drop.json")],
     "StudyToolsTest.MeasuredDropQuantizesOneTensorAtATimeOnTheValidationSplit")
case("budget below what the candidates can reach", ["search", "--indicators", path("ind", "indicators.json"),
     "--bitops", "0.00001"], "SearchTest.InfeasibleBudgetStatesWhatIsReachable")
case("budget spec that is not a number or WxAy", ["search", "--indicators", path("ind", "indicators.json"),
     "--bitops", "W3"], "SearchTest.UniformEquivalentBudgetAndExactCosts")
case("constraint CSV without its header", ["search", "--indicators", path("ind", "indicators.json"), "--bitops",
     "W4A4", "--constraint", write("lat.csv", "a,b\n1,2\n"), "--constraint-budget", "1"], "SearchTest.ExtraCsvConstraint")
case("constraint CSV row that is not numbers", ["search", "--indicators", path("ind", "indicators.json"),
     "--bitops", "W4A4", "--constraint", write("lat2.csv", "layer,weight_bits,act_bits,cost\nlayer1.0.conv1,four,4,1\n"),
     "--constraint-budget", "1"], "SearchTest.ExtraCsvConstraint")

with open(OUT, "w") as f:
    f.write("""# Errors a user can meet

Every row is a bad input tried on the command-line tool, with the first line of
the error it prints (captured by `tests/tools/errors_catalogue.py`, which
regenerates this file: `/usr/bin/python3 tests/tools/errors_catalogue.py
build/limpq docs/errors.md`), and the unit test that checks that message. All
of them exit non-zero and leave every file that was there before untouched.

Other failures, checked by tests but not produced by a one-line command:

| situation | what happens | test |
|---|---|---|
| NaN or Inf loss | `train: non-finite loss (nan) at epoch 1, batch 1/6, step 1: first non-finite output at layer 'layer2.0.conv1'. Stopped without saving; the last good checkpoint is '...' (lower the learning rate, or set run.on_nonfinite: skip to skip such steps)` | ReliabilityTest.NonFiniteLossStopsNamingTheStepAndTheLayer |
| NaN with `on_nonfinite: skip` that poisoned batch-norm statistics | `... also made the buffer '...' non-finite, so the step cannot be skipped` | ReliabilityTest.NonFiniteLossStopsNamingTheStepAndTheLayer |
| Ctrl-C / SIGTERM during training | `limpq: interrupted in epoch 1/2 at batch 3/6 (step 3); checkpoint written to '...'; run the same command again with --resume to continue`, exit status 130 (143 for SIGTERM); a second Ctrl-C exits at once | CrashTest.SigintCheckpointsAndExitsWithAResumeHint, SignalsDeathTest.SecondSignalExitsAtOnce |
| SIGKILL at any moment | every file in the run folder stays complete; `--resume` continues to the same result | CrashTest.SigkillAtRandomPointsThenResumeEqualsAnUninterruptedRun |
| disk full while writing | `cannot write '...': ...: File too large` (or `No space left on device`); the previous file is kept | AtomicFileTest.FullDiskIsAnErrorAndKeepsThePreviousFile |
| checkpoint of another format version | `checkpoint '...': format 'limpq.checkpoint/9' is not supported (expected 'limpq.checkpoint/2'; written by another limpq version?)` | ReliabilityTest.CorruptTruncatedAndWrongVersionCheckpointsAreRefused |

## Command-line errors

| bad input | command | message | test |
|---|---|---|---|
""")
    for what, command, message, test in rows:
        cell = lambda s: s.replace("|", "\\|")
        f.write(f"| {cell(what)} | `{cell(command)}` | `{cell(message)}` | {test} |\n")
print(f"{len(rows)} rows written to {OUT}")
