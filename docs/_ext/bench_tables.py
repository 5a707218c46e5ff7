"""``.. bench-section:: HEADING``: a section of ``bench/README.md``, as it stands there.

The figures of the benchmark page are not copied by hand: each directive finds the
heading (``## HEADING`` or ``### HEADING``, matched from its start) in bench/README.md and
renders what follows it, up to the next heading of the same or a higher level, or up to
the first line starting with ``:until:``. The Markdown it meets there is small: pipe
tables, fenced code, paragraphs and bullets with inline code, ``**bold**``; ``###``
headings inside become rubrics. A heading that is not there is an error, so a renamed
section in bench/README.md fails the docs build instead of vanishing from it.
"""

import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

BENCH_README = Path(__file__).resolve().parents[2] / "bench" / "README.md"
CODE = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")


def inline(text):
    """Markdown inline code `x` as RST's ``x``; a bare | or trailing _ escaped."""
    parts = []
    last = 0
    for match in CODE.finditer(text):
        parts.append(_escape(text[last:match.start()]))
        parts.append(f"``{match.group(1).strip()}``" if match.group(1).strip() else "")
        last = match.end()
    parts.append(_escape(text[last:]))
    return "".join(parts)


def _escape(text):
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)  # name_ would be a reference
    return re.sub(r"(?<![\w*])\*(?=[\s\d])", r"\\*", text)  # a lone * is no emphasis


def table(rows):
    """A pipe table as an RST list-table (the second row is the alignment row)."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header, body = cells[0], cells[2:]
    out = [".. list-table::", "   :header-rows: 1", "   :class: bench-table", ""]
    for row in [header] + body:
        row = row + [""] * (len(header) - len(row))
        for k, cell in enumerate(row):
            out.append(("   * - " if k == 0 else "     - ") + inline(cell))
    return out + [""]


def to_rst(lines):
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
            out += ["::", ""] + ["   " + body for body in lines[i + 1:end]] + [""]
            i = end + 1
        elif line.startswith("|"):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out += [""] + table(lines[i:end])
            i = end
        elif line.startswith("    ") and (not out or out[-1] == ""):
            out += ["::", ""]  # an indented Markdown code block
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                out.append(lines[i])
                i += 1
        elif line.startswith("#"):
            out += ["", ".. rubric:: " + inline(line.lstrip("#").strip()), ""]
            i += 1
        else:
            out.append(inline(line))
            i += 1
    return out


def section(heading, until=None):
    lines = BENCH_README.read_text(encoding="utf-8").splitlines()
    found = [(k, len(m.group(1))) for k, m in enumerate(re.match(r"(#+) (.*)", line)
                                                     for line in lines)
             if m and m.group(2).startswith(heading)]
    if not found:
        raise ValueError(f"bench/README.md has no heading starting {heading!r}")
    start, level = found[0]
    body = []
    for line in lines[start + 1:]:
        match = re.match(r"(#+) ", line)
        if match and len(match.group(1)) <= level:
            break
        if until and line.startswith(until):
            break
        body.append(line)
    return body


class BenchSection(SphinxDirective):
    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"until": directives.unchanged}

    def run(self):
        self.env.note_dependency(str(BENCH_README))
        try:
            body = section(self.arguments[0], self.options.get("until"))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        container = nodes.container()
        self.state.nested_parse(StringList(to_rst(body), str(BENCH_README)), self.content_offset,
                                container)
        return container.children


def setup(app):
    app.add_directive("bench-section", BenchSection)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
