"""The Greek edition in this repository is complete, up to date and consistent (docs/i18n.md).

* The package catalog has exactly the strings src/maillab marks, every one translated and none
  fuzzy, and the compiled .mo says the same.
* Tables of learner-facing prose in the package are marked with N_() (but for the tables
  edition.toml lists as pending, which must still hold unmarked prose).
* Every translation keeps its {fields}, inline code and nbgrader markers, follows the glossary
  (one Greek word per concept: folder and envelope apart) and leaves no English prose.
* Every notebook listed as published in edition.toml, and every notebook whose Greek file is
  in the repository, has a catalog in step with its English and complete, and a Greek file that
  is exactly what `python -m maillab.i18n build` writes.

Fix a failure with `python -m maillab.i18n update`, translate, then `... build`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maillab.i18n.edition import Edition
from maillab.i18n import state

ROOT = Path(__file__).resolve().parent.parent
EDITION = Edition(ROOT, "el")
CATALOGS = [EDITION.package_catalog] + [nb.catalog for nb in EDITION.notebooks()
                                         if nb.catalog.exists()]


def _show(problems: list[str]) -> str:
    return "\n".join(problems[:40]) + (f"\n... and {len(problems) - 40} more"
                                        if len(problems) > 40 else "")


def test_package_catalog_has_what_the_sources_mark():
    problems = state.package_sources_problems(EDITION)
    assert not problems, _show(problems)


def test_package_catalog_is_translated():
    problems = state.completeness_problems(EDITION.package_catalog)
    assert not problems, _show(problems)


def test_compiled_package_catalog_is_fresh():
    problems = state.mo_problems(EDITION)
    assert not problems, _show(problems)


def test_tables_of_prose_are_marked():
    problems = state.table_problems(EDITION)
    assert not problems, _show(problems)


@pytest.mark.parametrize("catalog", CATALOGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_translations_keep_fields_and_terms_and_leave_no_english(catalog):
    problems = state.entry_problems(EDITION, catalog)
    assert not problems, _show(problems)


def test_published_and_present_greek_notebooks_are_complete_and_fresh():
    held = state.notebooks_to_hold(EDITION)
    problems = state.config_problems(EDITION)
    for nb in held:
        problems += state.notebook_problems(EDITION, nb)
    assert not problems, _show(problems)


def test_the_edition_covers_every_english_notebook():
    names = {nb.name for nb in EDITION.notebooks()}
    assert {"course/00-welcome.ipynb", "solutions/smtp/smtp.ipynb"} <= names
    targets = {nb.target.relative_to(ROOT).as_posix() for nb in EDITION.notebooks()}
    assert "course/el/00-welcome.ipynb" in targets and "solutions/smtp-el/smtp-el.ipynb" in targets


