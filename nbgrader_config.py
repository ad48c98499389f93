# nbgrader settings for the maillab labs. nbgrader reads this file when it runs in this folder
# (the repository's top level); docs/instructor.md explains the workflow around it.
import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- Where things live ------------------------------------------------------------------
# nbgrader's default folder names, mapped onto this repository:
#   source   -> solutions/<lab>/<lab>.ipynb   instructor masters (solutions + hidden tests)
#   release  -> labs/<lab>/<lab>.ipynb        student versions (generated, committed)
#   submitted/autograded/feedback             per student, made while grading (not committed)
# nbgrader's "solution" folder (a copy with solutions, for students after the deadline) would
# be easy to mix up with "solutions": it is called model-answers here.
c.CourseDirectory.root = HERE
c.CourseDirectory.course_id = "maillab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.solution_directory = "model-answers"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")

# ---- Student versions ---------------------------------------------------------------------
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# ---- Time limits: no submission can hang the grader ----------------------------------------
# Three layers, from the fastest:
# 1. The locked setup cell of every lab sets socket.setdefaulttimeout(3): a client waiting for an
#    answer that never comes fails after 3 s.
# 2. The same cell gives every cell a time limit of 8 s (maillab.grading.limit_cells): the cell
#    is interrupted; under nbgrader, a cell that ignores the interrupt (swallows it in a loop)
#    ends the kernel 3 s later.
# 3. nbgrader's own per-cell timeout below, for code that defeats the first two. On timeout the
#    kernel is interrupted; if it does not answer, the executor restarts it.
# In every case only the guilty cell fails: the executor (RobustExecute) restarts a dead kernel,
# runs the earlier non-test cells again and goes on, instead of dropping the submission.
c.Execute.timeout = 30  # seconds per cell
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 60

# ---- Robust autograding ---------------------------------------------------------------------
# Deleted test cells and a deleted setup cell are put back from the gradebook's copy; edited
# ones are overwritten with it (nbgrader's checksums).
c.OverwriteCells.add_missing_cells = True
try:
    from maillab.grading import nbgrader_preprocessors
except ImportError:  # maillab not installed here: plain nbgrader behaviour
    pass
else:
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput,
                                        DeduplicateIds, IgnorePattern, LimitOutput,
                                        OverwriteKernelspec, SaveAutoGrades)

    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    _robust = nbgrader_preprocessors()
    c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                          _robust["RobustOverwriteCells"], CheckCellMetadata]
    c.Autograde.autograde_preprocessors = [_robust["RobustExecute"], IgnorePattern,
                                           ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    # Feedback shows what failed and why, never the hidden tests: their source is taken out of
    # the test cells, and so is a traceback that would quote it.
    c.GenerateFeedback.preprocessors = [GetGrades, _robust["HideHiddenTests"],
                                        CSSHTMLHeaderPreprocessor]

# ---- Grading in sandboxes ---------------------------------------------------------------------
# `sudo python -m maillab grade <lab>` (docs/instructor.md) uses this same configuration: the
# folders, the gradebook, the sanitizing steps and Execute's limits above. It replaces the
# autograde steps with its own (the notebook runs in a sandbox against a lab the grader runs;
# every test cell then runs in the grader's process against the learner's answers).

# ---- Collecting from an LMS ------------------------------------------------------------------
# `nbgrader zip_collect <lab>` reads downloaded/<lab>/archive/ (zip files, or loose notebooks
# named "<student>_<lab>.ipynb", as LMS downloads are). nbgrader matches the regexp against the
# whole path of each extracted file: the student id is the part of the file name before "_".
c.ZipCollectApp.archive_directory = "archive"
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.-]+)_(?P<file_id>[^/]+)$"
