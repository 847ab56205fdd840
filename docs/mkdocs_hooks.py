"""MkDocs hooks (named in ``mkdocs.yml``): the comparison tables of ``results/`` in the site.

The pages link ``../results/<name>.md``, which is right when they are read in the
repository. The site cannot reach outside ``docs/``, so the hooks add each
``results/*.md`` to it as ``results/<name>.md`` and point those links there; a link to a
table that does not exist still fails ``mkdocs build --strict``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    for path in sorted((root / "results").glob("*.md")):
        files.append(
            File(
                f"results/{path.name}",
                src_dir=str(root),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
                inclusion=InclusionLevel.NOT_IN_NAV,
            )
        )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    up = "../" * page.file.src_uri.count("/")
    return markdown.replace("](../results/", f"]({up}results/")
