"""README.md's "Your own network" and docs/onnx.md, run as written.

In a fresh folder, in the order a user follows them: docs/onnx.md's export
snippet (section 1), README.md's commands (export with the one-liner, `limpq
run`, the policy printed), docs/onnx.md's commands (section 2: cost, eval,
train, run, export ONNX with --verify, export state-dict) and its policy
snippet (section 3); then the state_dict is loaded into torchvision's module
with load_state_dict(strict=True) and quantized with the documented formulas
(tests/tools/quantized_state_dict.py), fed the test images preprocessed as
documented, and its logits are compared with ONNX Runtime's on the exported
network, which --verify compares with limpq's own.

The commands are run as the documents print them. Two things differ, both
only to make the run short: configs/fashion_mnist_onnx_pipeline.yaml is a
copy with a data limit and one epoch per stage, and `limpq train` gets the
same limit and one epoch as extra flags. `python3` is Debian's (with
python3-torch), `build/limpq` the limpq under test.

    /usr/bin/python3 tests/tools/own_network_test.py build/limpq
    /usr/bin/python3 tests/tools/own_network_test.py build/limpq --transformer   # docs/onnx.md section 4
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tests", "tools")
sys.path.insert(0, TOOLS)
from quantized_state_dict import quantized_module  # noqa: E402

LIMIT = 512           # training images in every stage (the joint stage takes a quarter: one batch)
DOCUMENTED_MEAN, DOCUMENTED_STD = 0.2860, 0.3530
DATA = "/usr/share/datasets/fashion-mnist"


def section_blocks(path, heading):
    """The fenced code blocks (language, text) under `heading` up to the
    next heading of the same or a higher level; continuation lines joined."""
    level = heading.split(" ")[0]
    blocks, inside, fence, lines = [], False, None, []
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if fence is None and line.startswith("#"):
            this = line.split(" ")[0]
            if line.strip() == heading:
                inside = True
                continue
            if inside and len(this) <= len(level):
                break
        if not inside:
            continue
        if line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
            else:
                blocks.append((fence, "\n".join(lines)))
                fence = None
            continue
        if fence is not None:
            lines.append(line)
    assert blocks, f"{path}: no code block under '{heading}'"
    return blocks


def shell_commands(block):
    """The commands of a sh block, one per logical line."""
    commands, pending = [], ""
    for line in block.split("\n"):
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


class Folder:
    def __init__(self, limpq):
        self.dir = tempfile.mkdtemp(prefix="limpq_own_network_")
        os.makedirs(os.path.join(self.dir, "build"))
        os.symlink(os.path.abspath(limpq), os.path.join(self.dir, "build", "limpq"))
        # `python3` is the Python with PyTorch, as on a Debian machine.
        bin_dir = os.path.join(self.dir, ".bin")
        os.makedirs(bin_dir)
        os.symlink(sys.executable, os.path.join(bin_dir, "python3"))
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])
        self.outputs = {}

    def shortened_config(self, name):
        """configs/<name> with a data limit and one epoch per stage;
        everything else as shipped."""
        text = open(os.path.join(ROOT, "configs", name), encoding="utf-8").read()
        text, n = re.subn(r"(?m)^(  limit: )\d+$", rf"\g<1>{LIMIT}", text)
        assert n == 1, f"{name}: the config's data.limit moved"
        text, n = re.subn(r"(?m)^(  epochs: )\d+$", r"\g<1>1", text)
        assert n == 3, f"{name}: the config's epochs moved"
        os.makedirs(os.path.join(self.dir, "configs"), exist_ok=True)
        with open(os.path.join(self.dir, "configs", name), "w") as f:
            f.write(text)

    def run(self, command, what):
        print(f"$ {command}", flush=True)
        r = subprocess.run(command, shell=True, cwd=self.dir, env=self.env, capture_output=True, text=True,
                           executable="/bin/bash")
        print(r.stdout[-3000:], end="")
        if r.returncode != 0:
            print(r.stderr[-3000:], end="")
            raise SystemExit(f"FAILED ({what}): exit {r.returncode}: {command}")
        self.outputs[command] = r.stdout
        return r.stdout

    def python(self, code, what):
        path = os.path.join(self.dir, ".snippet.py")
        with open(path, "w") as f:
            f.write(code)
        return self.run(f"python3 {path}", what)

    def path(self, name):
        return os.path.join(self.dir, name)


def shortened(command):
    """`limpq train` shortened like the config (the only flags added)."""
    if not re.search(r"limpq train\b", command):
        return command
    code, hash_, comment = command.partition(" #")
    return f"{code.rstrip()} --limit {LIMIT} --epochs 1" + (f"  #{comment}" if hash_ else "")


def fashion_mnist_test(count):
    """The first `count` test images as documented: resized bilinearly to
    32x32 and rounded to 8 bits, gray copied to 3 channels, normalised."""
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    x = torch.from_numpy(images.astype(np.float32))
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = (x / 255 - DOCUMENTED_MEAN) / DOCUMENTED_STD
    return x.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(labels.astype(np.int64))


def onnx_runtime(model, x, folder):
    """ONNX Runtime's logits of the graph as written (optimizations off)."""
    inputs, outputs = folder.path(".input.f32"), folder.path(".logits.f32")
    x.numpy().tofile(inputs)
    subprocess.run(["node", os.path.join(ROOT, "tools", "ort", "run_onnx.js"), model, inputs, *map(str, x.shape),
                    outputs, "disabled"], check=True, capture_output=True)
    return torch.from_numpy(np.fromfile(outputs, np.float32).reshape(x.shape[0], -1))


def check(condition, what):
    print(("ok: " if condition else "FAILED: ") + what, flush=True)
    if not condition:
        raise SystemExit(1)


def main():
    folder = Folder(sys.argv[1])
    if sys.argv[2:] == ["--transformer"]:
        return transformer(folder)
    folder.shortened_config("fashion_mnist_onnx_pipeline.yaml")
    readme = os.path.join(ROOT, "README.md")
    guide = os.path.join(ROOT, "docs", "onnx.md")

    # docs/onnx.md, 1. Export: the snippet, on the README's network.
    (lang, code), = [b for b in section_blocks(guide, "## 1. Export") if b[0] == "python"]
    folder.python("import torchvision\nmodel = torchvision.models.mobilenet_v3_small(num_classes=10)\n" + code,
                  "docs/onnx.md section 1")
    check(os.path.exists(folder.path("net.onnx")), "docs/onnx.md's export wrote net.onnx")

    # README.md, Your own network: export, run, policy.
    (lang, block), = section_blocks(readme, "## Your own network")
    commands = shell_commands(block)
    check(len(commands) == 3, "README.md's own-network block has its three commands")
    for command in commands:
        folder.run(command, "README.md")
    table = folder.outputs[commands[1]]
    # A network whose batch-norm statistics were never re-estimated after one short epoch ranks the
    # classes the same way on every image: exactly 10.00% top-1 and 50.00% top-5 on the balanced test set.
    fp = re.search(r"(?m)^full precision .*?([\d.]+)% +([\d.]+)%", table)
    check(fp is not None and (fp.group(1), fp.group(2)) != ("10.00", "50.00"),
          f"the run's full-precision row is not one constant ranking ({fp.groups() if fp else '?'})")
    check("'features." in folder.outputs[commands[2]], "the policy names the module paths")

    # docs/onnx.md, 2. Run limpq on it.
    (lang, block), = section_blocks(guide, "## 2. Run limpq on it")[:1]
    check(lang == "sh", "docs/onnx.md section 2 starts with its commands")
    commands = [shortened(c) for c in shell_commands(block)]
    for command in commands:
        folder.run(command, "docs/onnx.md section 2")
    verify = next(folder.outputs[c] for c in commands if "--verify" in c)
    exact = re.search(r"as written.*?on ([\d.]+)% of the images.*?top-1 agreement ([\d.]+)%", verify)
    check(exact is not None and float(exact.group(1)) >= 95.0 and float(exact.group(2)) >= 99.0,
          f"--verify: the file as written gives limpq's logits ({exact.groups() if exact else verify})")

    # docs/onnx.md, 3. Use the policy in PyTorch.
    (lang, code), = section_blocks(guide, "## 3. Use the policy in PyTorch")[:1]
    printed = folder.python("import torchvision\nmodel = torchvision.models.mobilenet_v3_small(num_classes=10)\n" +
                            code, "docs/onnx.md section 3")
    policy = json.load(open(folder.path("runs/onnx_pipeline/policy.json")))
    check(len(printed.strip().split("\n")) == len(policy["layers"]) + len(policy["fixed"]),
          "the policy snippet prints every layer of the policy")

    # The state_dict in the user's module, under the documented formulas.
    import torchvision
    model = quantized_module(torchvision.models.mobilenet_v3_small(num_classes=10),
                             torch.load(folder.path("net_mixed.pt"))).eval()
    x, labels = fashion_mnist_test(500)
    with torch.no_grad():
        ours = model(x)
    theirs = onnx_runtime(folder.path("net_mixed.onnx"), x, folder)
    scale = theirs.abs().amax(1, keepdim=True).clamp_min(1e-12)
    relative = ((ours - theirs).abs() / scale).amax(1)
    agree = (ours.argmax(1) == theirs.argmax(1)).double().mean().item() * 100
    print(f"state_dict in PyTorch against ONNX Runtime on {len(x)} test images: top-1 agreement {agree:.1f}%, "
          f"median relative difference {relative.median().item():.2g}, "
          f"top-1 {(ours.argmax(1) == labels).double().mean().item() * 100:.2f}% (PyTorch) "
          f"{(theirs.argmax(1) == labels).double().mean().item() * 100:.2f}% (ONNX Runtime)")
    check(agree >= 99.0, "the PyTorch module under the documented formulas predicts as limpq's network")
    check(relative.median().item() < 1e-4, "and gives its logits to float rounding on the median image")
    shutil.rmtree(folder.dir)
    return 0


def transformer(folder):
    """docs/onnx.md, 4. A vision transformer: its commands as written (the
    config shortened), then what the section says of the layers."""
    folder.shortened_config("fashion_mnist_vit_pipeline.yaml")
    guide = os.path.join(ROOT, "docs", "onnx.md")
    (lang, block), = section_blocks(guide, "## 4. A vision transformer")
    check(lang == "sh", "docs/onnx.md section 4 is one sh block")
    commands = shell_commands(block)
    check(len(commands) == 4, "section 4 has its four commands: export, cost, run, export --verify")
    for command in commands:
        folder.run(command, "docs/onnx.md section 4")
    cost = folder.outputs[commands[1]]
    block0 = "encoder.layers.encoder_layer_0."
    for layer in ("self_attention.in_proj", "self_attention.matmul_1", "self_attention.matmul_2",
                  "self_attention.out_proj", "mlp.0", "mlp.3"):
        check(re.search(rf"(?m)^{re.escape(block0 + layer)} ", cost) is not None,
              f"limpq cost lists {block0}{layer}, as section 4 says")
    check(re.search(r"(?m)^conv_proj .*fixed", cost) is not None and
          re.search(r"(?m)^heads.head .*fixed", cost) is not None, "the patch embedding and the head are fixed")
    policy = json.load(open(folder.path("runs/vit_pipeline/policy.json")))
    check(block0 + "self_attention.matmul_2" in policy["layers"], "the policy names the attention products")
    verify = folder.outputs[commands[3]]
    exact = re.search(r"as written.*?top-1 agreement ([\d.]+)%", verify)
    check(exact is not None and float(exact.group(1)) >= 99.0,
          f"--verify: ONNX Runtime predicts as limpq on the exported ViT ({exact.groups() if exact else verify})")
    shutil.rmtree(folder.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
