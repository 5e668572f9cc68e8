"""Two directives for parts of fastwire that land on separate branches.

``fastwire-module``: autodoc for one fastwire module. It expands to
``automodule`` when the module imports. A module listed in
``fastwire_pending_modules`` (conf.py) that does not import yet becomes a
visible note on the page; any other import failure is a build warning, which
``sphinx-build -W`` turns into an error, so a missing part is never hidden.

``fastwire-chart``: an image committed by another branch (the benchmark chart).
It is an ordinary image when the file exists; a note if the file is listed in
``fastwire_pending_files``; a build warning otherwise.
"""

import importlib
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


class FastwireModule(SphinxDirective):
    required_arguments = 1
    has_content = False
    option_spec = {"summary-only": directives.flag}

    def run(self):
        name = self.arguments[0]
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if name in self.config.fastwire_pending_modules:
                note = nodes.note()
                note += nodes.paragraph(text=f"{name} is not part of this build yet "
                                             f"(its branch is not merged): {exc}")
                return [note]
            logger.warning("cannot document %s: %s", name, exc, location=self.get_location())
            return []
        # The public names of a fastwire module are mostly defined in the compiled
        # core and re-exported, so imported members are documented, as selected
        # by the module's __all__ (autodoc's rule); :summary-only: keeps only the
        # module docstring (the package, whose names are documented in their modules).
        options = [] if "summary-only" in self.options else ["   :members:", "   :imported-members:"]
        # The pages are MyST; autodoc writes reStructuredText, hence eval-rst.
        lines = StringList(["```{eval-rst}", f".. automodule:: {name}", *options, "```", ""],
                           source="fastwire-module")
        container = nodes.container()
        self.state.nested_parse(lines, self.content_offset, container)
        return container.children


class FastwireChart(SphinxDirective):
    required_arguments = 1
    optional_arguments = 0
    final_argument_whitespace = False
    has_content = True  # the alt text

    def run(self):
        relative = self.arguments[0]
        path = Path(self.env.srcdir) / relative
        alt = " ".join(self.content) or relative
        if path.is_file():
            lines = StringList([f"```{{image}} /{relative}", f":alt: {alt}", "```", ""], source="fastwire-chart")
            container = nodes.container()
            self.state.nested_parse(lines, self.content_offset, container)
            return container.children
        if relative in self.config.fastwire_pending_files:
            note = nodes.note()
            note += nodes.paragraph(text=f"docs/{relative} is not part of this build yet "
                                         "(its branch is not merged).")
            return [note]
        logger.warning("chart docs/%s is missing", relative, location=self.get_location())
        return []


def literal_call_signature(app, what, name, obj, options, lines):
    """A compiled class's docstring may open with its call signature, sometimes
    over several lines (``Unpickler(file, *, fix_imports=True, ...`` /
    ``buffers=())``), which autodoc does not always take as the signature and
    reStructuredText would read as markup (``*``). Show it as one literal line."""
    short_name = name.rpartition(".")[2]
    if not lines or not lines[0].startswith(short_name + "("):
        return
    depth = 0
    for end, line in enumerate(lines):  # noqa: B007 - end is read after the loop
        depth += line.count("(") - line.count(")")
        if depth <= 0:
            break
    else:
        return
    signature = " ".join(line.strip() for line in lines[:end + 1])
    lines[:end + 1] = [f"``{signature}``"]


def setup(app):
    app.connect("autodoc-process-docstring", literal_call_signature)
    app.add_config_value("fastwire_pending_modules", [], "env")
    app.add_config_value("fastwire_pending_files", [], "env")
    app.add_directive("fastwire-module", FastwireModule)
    app.add_directive("fastwire-chart", FastwireChart)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
