"""Stage 6, report: run and experiment folders in, pages and plots a person reviews.

Imports the shared top-level modules and every earlier stage.

Modules: ``collect`` (a run folder read into one dict, saying what is missing), ``thumbnails`` (three orthogonal
mid-slices of a volume with its organs in colour, as a small PNG), ``page`` (the HTML page and
``nnunet-medaka report``). Heavy imports (matplotlib, SimpleITK) stay inside functions.
"""

__all__ = ["build_report", "collect_run", "write_case_thumbnail"]


def __getattr__(name: str):
    # lazy: ``nnunet_medaka.report.build_report`` without importing matplotlib at package import
    if name == "build_report":
        from nnunet_medaka.report.page import build_report

        return build_report
    if name == "collect_run":
        from nnunet_medaka.report.collect import collect_run

        return collect_run
    if name == "write_case_thumbnail":
        from nnunet_medaka.report.thumbnails import write_case_thumbnail

        return write_case_thumbnail
    raise AttributeError(name)
