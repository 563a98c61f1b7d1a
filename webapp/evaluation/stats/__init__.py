"""Statistics of a blind evaluation round (preprint §4.6 Table 3 and §4.8 Table 5).

Pure Python + numpy/scipy/krippendorff: no Django, so it can be tested and benchmarked alone and
called from a view, a task or a notebook. The web app turns its ``Rating`` rows into
:class:`~webapp.evaluation.stats.ratings.RatingRow` values and calls
:func:`~webapp.evaluation.stats.results.compute_results`; :mod:`webapp.evaluation.tables` and
:mod:`webapp.evaluation.charts` render the ``Results``. One module per job:

* ``ratings``: what a rating is (the Likert scale, the marks), its checks, and the ratings as
  arrays;
* ``bootstrap``: estimates with percentile bootstrap intervals over items, and the relative
  reduction against a baseline;
* ``significance``: paired Wilcoxon signed-rank tests with Holm's correction;
* ``agreement``: inter-rater agreement (Krippendorff's alpha, pairwise exact agreement);
* ``rater_bias``: each rater's offset from the other raters of the same responses;
* ``results``: ``compute_results``, which puts them together into ``Results``.

Units of analysis (the README's statistics section says the same in words):

* an **item** is one (image, question) pair; it is the unit the bootstrap resamples;
* a **response** is one (item, system) pair; it is the unit of inter-rater agreement and of the
  majority rule for hallucinations and error types;
* a **rating** is one rater's judgement of one response (one ``RatingRow``).

Every number that cannot be computed is ``None`` together with a reason, never NaN.
"""
