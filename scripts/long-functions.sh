#!/usr/bin/env bash
# Lists Rust functions longer than a limit (default 80 lines, from the line of `fn` to the line
# of its closing brace), longest first: `scripts/long-functions.sh [limit] [dir…]`, by default
# over bridge/src and src-tauri/src. A function inside a `#[cfg(test)]` module, or in a file
# named tests.rs, is marked `test`. Exits 1 when one is found, so it can gate a check.
#
# A small lexer, not a parser: it skips comments, strings (also raw and byte strings) and char
# literals, so braces inside them do not count; a `fn` without a body (a trait method) is
# skipped. Nested functions are listed on their own and still count in the outer one.
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-80}"
shift || true
[ "$#" -gt 0 ] || set -- bridge/src src-tauri/src
exec python3 - "$limit" "$@" <<'PY'
import pathlib, re, sys

limit, roots = int(sys.argv[1]), sys.argv[2:]
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

def tokens(text):
    """Yields (kind, value, line) for identifiers and the punctuation `{ } ( ) ;` and `#[`."""
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1; i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i): depth += 1; i += 2
                elif text.startswith("*/", i): depth -= 1; i += 2
                else:
                    line += text[i] == "\n"; i += 1
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not (text[i-1].isalnum() or text[i-1] == "_")):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            line += text.count("\n", i, end); i = end
        elif c == '"' or text.startswith('b"', i) and not (i and (text[i-1].isalnum() or text[i-1] == "_")):
            i += 1 if c == '"' else 2
            while i < n and text[i] != '"':
                if text[i] == "\\": i += 1
                line += text[i] == "\n"; i += 1
            i += 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): a literal closes.
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'").match(text, i)
            i = m.end() if m else i + 1
        elif m := IDENT.match(text, i):
            yield "id", m.group(), line; i = m.end()
        elif c in "{}();":
            yield c, c, line; i += 1
        elif text.startswith("#[", i):
            yield "attr", "#[", line; i += 2
        else:
            i += 1

def functions(path):
    toks = list(tokens(path.read_text()))
    test_from = None  # brace depth at which a #[cfg(test)] item opened
    depth, pending_test, found = 0, False, []
    for k, (kind, value, line) in enumerate(toks):
        if kind == "attr" and [t[1] for t in toks[k+1:k+5]] == ["cfg", "(", "test", ")"]:
            pending_test = True
        elif kind == "{":
            depth += 1
            if pending_test and test_from is None:
                test_from = depth
            pending_test = False
        elif kind == "}":
            if test_from == depth:
                test_from = None
            depth -= 1
        elif kind == ";":
            pending_test = False
        elif kind == "id" and value == "fn" and k + 1 < len(toks) and toks[k+1][0] == "id":
            name, parens, j = toks[k+1][1], 0, k + 2
            while j < len(toks):
                t = toks[j][0]
                if t == "(": parens += 1
                elif t == ")": parens -= 1
                elif parens == 0 and t in "{;": break
                j += 1
            if j == len(toks) or toks[j][0] == ";":
                continue
            inner, e = 0, j
            while e < len(toks):
                if toks[e][0] == "{": inner += 1
                elif toks[e][0] == "}":
                    inner -= 1
                    if inner == 0: break
                e += 1
            length = toks[e][2] - line + 1
            test = test_from is not None or pending_test or path.name == "tests.rs"
            found.append((length, f"{path}:{line}", name, test))
    return found

rows = []
for root in roots:
    for path in sorted(pathlib.Path(root).rglob("*.rs")):
        rows += [r for r in functions(path) if r[0] > limit]
for length, where, name, test in sorted(rows, reverse=True):
    print(f"{length:5}  {where}  {name}{'  (test)' if test else ''}")
sys.exit(1 if rows else 0)
PY
