"""Grading that no submission can fake: ``python -m maillab grade LAB``.

Inside a learner's kernel nothing can be trusted (input transformers, patched modules, forged
files), so the grade is decided elsewhere:

* :mod:`~maillab.grader.sealed`: the lab's servers run in the grader; their store and
  transcripts stay there. :mod:`~maillab.grader.client` is what ``maillab.start()`` returns in
  the sandboxed kernel (same API, read-only copies of the evidence).
* :mod:`~maillab.grader.sandbox`: every process of a submission runs as a throwaway user in
  bubblewrap namespaces with limits; it cannot read the course, signal the grader or reach
  another submission's lab.
* :mod:`~maillab.grader.answers` and :mod:`~maillab.grader.learner`: the learner's code loaded
  in a fresh interpreter, called through proxies; only plain data comes back.
* :mod:`~maillab.grader.checks`: the master's test cells, run in the grader's process.
* :mod:`~maillab.grader.execute`: the two nbgrader preprocessors (the notebook's run for the
  learner's feedback, then the verdicts that nbgrader scores).
* :mod:`~maillab.grader.worker` and :mod:`~maillab.grader.command`: workers in parallel over
  one gradebook, progress and the report.
"""
