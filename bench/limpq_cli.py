"""Running build/limpq from the study scripts (bench/*.py): one logged call,
its stderr kept in a file, its last JSON line of stdout returned."""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run_limpq(limpq, argv, log_path, caller):
    """Runs `limpq argv`, stderr to log_path; the last JSON line of stdout (with
    its wall time) or {} when there is none. A failure ends the study with the
    command and the log to read."""
    log("limpq " + " ".join(argv))
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_path, "w") as err:
        proc = subprocess.run([str(limpq)] + list(argv), stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        sys.exit(f"{caller}: limpq {argv[0]} failed ({proc.returncode}); see {log_path}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    result["wall_seconds"] = time.time() - start
    return result


def file_digest(path):
    """The first 8 hex digits of a file's SHA-256: names what was derived from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


def policy_run_key(policy, recipe):
    """(finetune flags, cache key) of fine-tuning under `policy` (a policy file
    or a uniform WxAy) with `recipe`: identical policies share one key."""
    if policy.startswith("W"):
        content, flag = policy, ["--uniform", policy]
    else:
        content = json.loads(Path(policy).read_text())
        content.pop("checksum", None)
        flag = ["--policy", policy]
    key = hashlib.sha256(json.dumps([content, recipe], sort_keys=True).encode()).hexdigest()[:12]
    return flag, key


class Study:
    """What every study script shares: its arguments, its output folder and
    the limpq binary it drives. Subclasses add their stages."""

    caller = "study"

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.limpq = str(Path(args.limpq).resolve())

    def run(self, argv, log_path):
        """Runs limpq, logging to log_path; returns the last JSON line of stdout."""
        return run_limpq(self.limpq, argv, log_path, self.caller)
