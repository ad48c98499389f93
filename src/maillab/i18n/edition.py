"""Where the files of a translated edition live (docs/i18n.md explains the layout).

=====================================  ======================================================
English source                         catalog  ->  generated translation
=====================================  ======================================================
src/maillab/**/*.py, webmail templates src/maillab/locale/el/LC_MESSAGES/maillab.po -> .mo
course/NN-name.ipynb                   course/.i18n/el/NN-name.po -> course/el/NN-name.ipynb
solutions/LAB/LAB.ipynb (lab master)   solutions/.i18n/el/LAB.po -> solutions/LAB-el/LAB-el.ipynb
=====================================  ======================================================

The Greek lab masters are nbgrader assignments of their own (``nbgrader generate_assignment
LAB-el`` releases them to labs/LAB-el/). Catalogs of notebooks sit in dot folders beside the
notebooks they translate: learners (JupyterLab hides dot folders) and nbgrader (which takes
every folder of solutions/ for an assignment) do not see them.
``src/maillab/locale/el/`` also holds the glossary (glossary.tsv) and the list of published
notebooks (edition.toml).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import LOCALE_DIR, LANGUAGES, SOURCE_LANGUAGE

CATALOG_DIR = ".i18n"


@dataclass(frozen=True)
class Notebook:
    """One English notebook of the course or one lab master, and its translation's files."""

    kind: str  # "course" or "lab"
    english: Path
    catalog: Path
    target: Path
    root: Path

    @property
    def name(self) -> str:
        """The English notebook's path from the top of the repository, e.g. course/01-smtp.ipynb:
        the start of every message context of its catalog."""
        return self.english.relative_to(self.root).as_posix()

    @property
    def target_name(self) -> str:
        return self.target.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Edition:
    root: Path
    lang: str

    @property
    def locale(self) -> Path:
        """src/maillab/locale/<lang> of this repository (the package reads the same folder)."""
        return self.root / "src" / LOCALE_DIR.parent.name / LOCALE_DIR.name / self.lang

    @property
    def package_catalog(self) -> Path:
        return self.locale / "LC_MESSAGES" / "maillab.po"

    @property
    def package_mo(self) -> Path:
        return self.package_catalog.with_suffix(".mo")

    @property
    def glossary(self) -> Path:
        return self.locale / "glossary.tsv"

    @property
    def config(self) -> Path:
        return self.locale / "edition.toml"

    def published(self) -> list[str]:
        """The notebooks (English paths) whose translation is finished and must stay complete."""
        if not self.config.exists():
            return []
        with self.config.open("rb") as f:
            return list(tomllib.load(f).get("published", []))

    def notebooks(self) -> list[Notebook]:
        found = []
        course = self.root / "course"
        for path in sorted(course.glob("*.ipynb")):
            found.append(Notebook("course", path, course / CATALOG_DIR / self.lang / f"{path.stem}.po",
                                  course / self.lang / path.name, self.root))
        solutions = self.root / "solutions"
        for path in sorted(solutions.glob("*/*.ipynb")):
            lab = path.parent.name
            if path.stem != lab or _translated_name(lab) or lab.startswith("."):
                continue  # not a master (LAB/LAB.ipynb), or a translation itself
            found.append(Notebook("lab", path, solutions / CATALOG_DIR / self.lang / f"{lab}.po",
                                  solutions / f"{lab}-{self.lang}" / f"{lab}-{self.lang}.ipynb",
                                  self.root))
        return found

    def renamed(self) -> dict[str, str]:
        """English notebook -> its translation (full paths as text), for relinking."""
        return {str(nb.english): str(nb.target) for nb in self.notebooks()}

    def orphans(self) -> list[Path]:
        """Catalogs and generated notebooks whose English notebook is gone."""
        catalogs = {nb.catalog for nb in self.notebooks()}
        targets = {nb.target for nb in self.notebooks()}
        found = [p for folder in ("course", "solutions")
                 for p in (self.root / folder / CATALOG_DIR / self.lang).glob("*.po")
                 if p not in catalogs]
        found += [p for p in (self.root / "course" / self.lang).glob("*.ipynb") if p not in targets]
        found += [p for p in (self.root / "solutions").glob(f"*-{self.lang}/*.ipynb")
                  if p not in targets]
        return sorted(found)


def _translated_name(lab: str) -> bool:
    return any(lab.endswith(f"-{lang}") for lang in LANGUAGES if lang != SOURCE_LANGUAGE)


def find_root(start: Path | None = None) -> Path:
    """The top of the repository: the folder with course/, solutions/ and pyproject.toml, found
    from the current folder upwards, else from where this package lives (editable install)."""
    candidates = [Path(start or Path.cwd()).resolve()]
    candidates.append(Path(__file__).resolve().parents[3])
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / "course").is_dir() and (folder / "solutions").is_dir() \
                    and (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError("no maillab repository here (course/, solutions/, pyproject.toml)")
