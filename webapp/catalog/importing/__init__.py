"""Importers: COCO, Visual Genome, caption lists and LLaVA-Instruct into the catalog.

Each importer is one keyword-only service function, called by its management command and by
the API upload endpoint alike. They validate every record and every image file first, then
write in bulk inside one transaction; see ``pipeline`` for the steps and guarantees. What
they share with the other importers (field readers, the report and its errors, bulk inserts)
is in ``webapp.core.importing``.
"""

from webapp.catalog.importing.captions import import_captions
from webapp.catalog.importing.coco import import_coco
from webapp.catalog.importing.llava import import_llava
from webapp.catalog.importing.vg import import_vg

__all__ = [
    "import_captions",
    "import_coco",
    "import_llava",
    "import_vg",
]
