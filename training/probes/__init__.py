"""Automatic benchmarks from curated data: probe sets on disk (``layout``), their lmms-eval
task (``lmms_task``), answer parsers and metrics, and the checkpoint scorer
(``python -m training bench``)."""
