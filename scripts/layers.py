"""The layering rule, checked: a module imports only from its own layer or lower.

Called by scripts/layers.sh; see there for usage.
"""

import os
import re
import sys

# Lowest first. A top-level module is `src/<name>.rs` or `src/<name>/`; main.rs and lib.rs are
# named by their file.
LAYERS = [
    ["model", "util", "metrics"],
    ["scheduler", "provisioner", "store", "logs", "error"],
    ["compute"],
    ["batch"],
    ["engine"],
    ["api", "console", "server", "cli", "bench", "main.rs", "lib.rs"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# `crate::` (or `$crate::` in a macro) then either a name or a `{` group.
CRATE_PATH = re.compile(r"(?<![\w:])\$?crate::(?:(\w+)|\{)")


RAW_START = re.compile(r'r(#*)"')
# What may stand before the `r` of a raw string: not an identifier (`for"` is no raw string),
# except the `b` of a raw byte string.
IDENT_END = re.compile(r"(?:\wb|[^\Wb])$")
# 'x', '\n', '\u{..}'; a lifetime ('a) has no closing quote.
CHAR_LITERAL = re.compile(r"'(?:\\.[^']*|[^\\'])'")


def strip_comments_and_strings(text):
    """The text with comments and string/char literals blanked, line breaks kept, so that line
    numbers stay right and a `crate::x` inside a doc comment or a string is not an import."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and RAW_START.match(text, i) and not IDENT_END.search(text[max(0, i - 2) : i]):
            hashes = RAW_START.match(text, i).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = CHAR_LITERAL.match(text, i)
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def group_heads(text, start):
    """`(first path segment, offset)` of each item of the `{...}` group opening at `start`."""
    depth, j, item_start, items = 0, start, start + 1, []
    while j < len(text):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                items.append(item_start)
                break
        elif c == "," and depth == 1:
            items.append(item_start)
            item_start = j + 1
        j += 1
    heads = []
    for item_start in items:
        m = re.compile(r"\s*(\w+)").match(text, item_start)
        if m and m.group(1) not in ("self", "super"):
            heads.append((m.group(1), m.start(1)))
    return heads


def top_module(rel):
    """`src/engine/table.rs` -> `engine`, `src/logs.rs` -> `logs`, `src/main.rs` -> `main.rs`."""
    parts = rel.split(os.sep)[1:]
    if len(parts) == 1:
        name = parts[0]
        return name if name in ("main.rs", "lib.rs") else name[: -len(".rs")]
    return parts[0]


def main():
    root = sys.argv[1]
    violations, unknown = [], []
    src = os.path.join(root, "src")
    for dirpath, _, files in os.walk(src):
        for file in sorted(files):
            if not file.endswith(".rs"):
                continue
            path = os.path.join(dirpath, file)
            rel = os.path.relpath(path, root)
            module = top_module(rel)
            if module not in LAYER:
                unknown.append(f"{rel}: module '{module}' has no layer in scripts/layers.py")
                continue
            with open(path, encoding="utf-8") as f:
                raw = f.read()
            code = strip_comments_and_strings(raw)
            raw_lines = raw.split("\n")
            seen = set()
            for m in CRATE_PATH.finditer(code):
                if m.group(1):
                    names = [(m.group(1), m.start())]
                else:
                    names = group_heads(code, m.end() - 1)
                for name, offset in names:
                    line_no = code.count("\n", 0, offset) + 1
                    if name not in LAYER:
                        # An item of the crate root (a macro, a re-export): lib.rs, the top.
                        name = "lib.rs"
                    if name == module or LAYER[name] <= LAYER[module]:
                        continue
                    if (line_no, name) in seen:
                        continue
                    seen.add((line_no, name))
                    violations.append(
                        f"{rel}:{line_no}: {module} (L{LAYER[module]}) imports crate::{name} "
                        f"(L{LAYER[name]}): {raw_lines[line_no - 1].strip()}"
                    )

    for line in unknown:
        print(line)
    for line in violations:
        print(line)
    if violations or unknown:
        print(
            f"layers: {len(violations)} import(s) from a higher layer, {len(unknown)} file(s) "
            "without a layer"
        )
        return 1
    print("layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
