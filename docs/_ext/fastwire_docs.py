"""The ``fastwire-module`` directive: autodoc for one fastwire module.

It expands to ``automodule`` when the module imports. A module listed in
``fastwire_pending_modules`` (conf.py) that does not import yet becomes a
visible note on the page; any other import failure is a build warning, which
``sphinx-build -W`` turns into an error, so a missing part is never hidden.
"""

import importlib

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


class FastwireModule(SphinxDirective):
    required_arguments = 1
    has_content = False

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
        lines = StringList([f".. automodule:: {name}", "   :members:", ""], source="fastwire-module")
        container = nodes.container()
        self.state.nested_parse(lines, self.content_offset, container)
        return container.children


def setup(app):
    app.add_config_value("fastwire_pending_modules", [], "env")
    app.add_directive("fastwire-module", FastwireModule)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
