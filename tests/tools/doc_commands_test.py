"""Every `limpq` command line in README.md and docs/*.md names a subcommand and
flags that exist: each shell code block's limpq invocations are parsed, and
each subcommand and --flag is looked up in `limpq <subcommand> --help`.

    /usr/bin/python3 tests/tools/doc_commands_test.py build/limpq README.md docs/*.md
"""
import re
import shlex
import subprocess
import sys


def code_lines(path):
    """The lines of the ```sh blocks of a Markdown file, continuations joined."""
    lines, block, pending = [], False, ""
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.rstrip("\n")
        if line.startswith("```"):
            block = line.strip() in ("```sh", "```bash") if not block else False
            continue
        if not block:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((n, pending + line))
        pending = ""
    return lines


def invocations(line):
    """(subcommand, [flags]) of each limpq invocation on a shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    found = []
    for i, t in enumerate(tokens):
        if not (t == "limpq" or t.endswith("/limpq")) or i + 1 >= len(tokens):
            continue
        sub = tokens[i + 1]
        if sub.startswith("-"):
            continue
        flags = []
        for t2 in tokens[i + 2:]:
            if t2 == "--" or t2 == "limpq" or t2.endswith("/limpq") or t2 in ("|", "&&", ";"):
                break
            if t2.startswith("--") and len(t2) > 2:
                flags.append(t2.split("=")[0])
        found.append((sub, flags))
    return found


def main():
    limpq, docs = sys.argv[1], sys.argv[2:]
    top = subprocess.run([limpq, "--help"], capture_output=True, text=True).stdout
    helps, problems, checked = {}, [], 0
    for doc in docs:
        for n, line in code_lines(doc):
            for sub, flags in invocations(line):
                checked += 1
                if not re.search(rf"^\s+{re.escape(sub)}\b", top, re.M):
                    problems.append(f"{doc}:{n}: no subcommand '{sub}' in `limpq --help`")
                    continue
                if sub not in helps:
                    helps[sub] = subprocess.run([limpq, sub, "--help"], capture_output=True, text=True).stdout
                for flag in flags:
                    if not re.search(rf"(^|[\s,]){re.escape(flag)}\b", helps[sub]):
                        problems.append(f"{doc}:{n}: `limpq {sub}` has no flag {flag}")
    for p in problems:
        print(p)
    print(f"{checked} limpq command lines checked in {len(docs)} files")
    if checked == 0:
        print("no limpq command line found")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
