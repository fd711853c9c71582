"""Every link and image of the given Markdown files resolves: a relative path
names a file or folder of the repository, and an anchor (#section, in the
same file or another Markdown file) names one of that file's headings as
GitHub renders it. Links to other sites are not followed (nothing here
reaches the internet); they are only counted.

    /usr/bin/python3 tests/tools/doc_links_test.py README.md BENCHMARKS.md docs/*.md bench/results/*/log.md
"""
import os
import re
import sys
from collections import Counter

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*(?:href|src)=\"([^\"]+)\"")


def prose_lines(path):
    """(line number, text) of a Markdown file outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading):
    """The anchor GitHub gives a heading: lower case, inline code and links
    reduced to their text, punctuation other than '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, found = Counter(), set()
        for _, line in prose_lines(path):
            m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            base = slug(m.group(2))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
        cache[path] = found
    return cache[path]


def targets(path):
    for n, line in prose_lines(path):
        # Inline code spans are text, not links.
        line = re.sub(r"`[^`]*`", "", line)
        for m in LINK.finditer(line):
            yield n, m.group(1)
        for m in HTML_LINK.finditer(line):
            yield n, m.group(1)


def check(path, target):
    """None when `target`, written in `path`, resolves; else what is wrong."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    file_part, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
    if not os.path.exists(resolved):
        return f"'{file_part}' does not exist (resolved to {resolved})"
    if anchor:
        if not resolved.endswith(".md") or os.path.isdir(resolved):
            return f"an anchor '#{anchor}' on '{file_part}', which is not a Markdown file"
        if anchor not in anchors(resolved):
            return f"'{resolved}' has no heading whose anchor is '#{anchor}'"
    return None


def main():
    problems, local, external = [], 0, 0
    for path in sys.argv[1:]:
        for n, target in targets(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                external += 1
                continue
            local += 1
            problem = check(path, target)
            if problem:
                problems.append(f"{path}:{n}: link '{target}': {problem}")
    print(f"{len(sys.argv) - 1} files: {local} links within the repository checked, {external} to other sites not followed")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
