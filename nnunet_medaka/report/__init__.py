"""Stage 6, report: run and experiment folders in, pages and plots a person reviews.

Imports the shared top-level modules and every earlier stage.
"""

__all__: list = []
